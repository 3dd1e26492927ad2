package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// processCPU returns the CPU time (user + system) consumed so far by the
// given comma-separated process ids, from /proc/PID/stat.
func processCPU(pids string) (time.Duration, error) {
	var total time.Duration
	for _, p := range strings.Split(pids, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		b, err := os.ReadFile("/proc/" + p + "/stat")
		if err != nil {
			return 0, fmt.Errorf("server cpu: %w", err)
		}
		// The command name (field 2) may contain spaces: fields are
		// counted after its closing parenthesis.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return 0, fmt.Errorf("server cpu: /proc/%s/stat: no command name", p)
		}
		f := strings.Fields(s[i+1:])
		// After ")": state is field 3, utime field 14, stime field 15.
		if len(f) < 13 {
			return 0, fmt.Errorf("server cpu: /proc/%s/stat: %d fields", p, len(f))
		}
		for _, v := range f[11:13] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("server cpu: /proc/%s/stat: %w", p, err)
			}
			total += time.Duration(n) * time.Second / clockTicks
		}
	}
	return total, nil
}

// selfCPU returns the CPU time (user + system) this process consumed so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter measures the CPU the load generator and the servers (-server-pid)
// spend between start and stop.
type cpuMeter struct {
	pids           string
	self0, server0 time.Duration
	serverErr      error
}

func startCPU(pids string) *cpuMeter {
	m := &cpuMeter{pids: pids, self0: selfCPU()}
	if pids != "" {
		m.server0, m.serverErr = processCPU(pids)
	}
	return m
}

// record adds the CPU spent since start, in total and per report, to res.
func (m *cpuMeter) record(res map[string]any, reports int64) {
	self := selfCPU() - m.self0
	res["loadgen_cpu_s"] = round3(self.Seconds())
	if reports > 0 {
		res["loadgen_cpu_us_per_report"] = round3(float64(self.Microseconds()) / float64(reports))
	}
	if m.pids == "" {
		return
	}
	if m.serverErr != nil {
		res["server_cpu_error"] = m.serverErr.Error()
		return
	}
	now, err := processCPU(m.pids)
	if err != nil {
		res["server_cpu_error"] = err.Error()
		return
	}
	srv := now - m.server0
	res["server_cpu_s"] = round3(srv.Seconds())
	if reports > 0 {
		res["server_cpu_us_per_report"] = round3(float64(srv.Microseconds()) / float64(reports))
	}
}

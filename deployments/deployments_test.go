// Package deployments_test checks the deployment files against the code:
// the configuration they carry loads and validates, the ports they open
// are the ports that configuration listens on, the environment variables
// they set are ones the binary reads, and the probe paths are served.
// Without a container engine or a Kubernetes cluster this is what can be
// verified; the binary the Dockerfile builds is built the same way here.
package deployments_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/internal/httpapi"
)

// testKey is a valid cluster key for loading configurations whose key
// comes from a secret.
const testKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// knownEnv returns the XCOLLECT_* variables the binary reads: every quoted
// "XCOLLECT_…" string in cmd/xcollect and internal/config.
func knownEnv(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`"(XCOLLECT_[A-Z0-9_]+)"`)
	known := map[string]bool{}
	for _, dir := range []string{"../cmd/xcollect", "../internal/config"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				known[m[1]] = true
			}
		}
	}
	if !known["XCOLLECT_CONFIG"] || !known["XCOLLECT_CLUSTER_KEY"] {
		t.Fatalf("the scan of the sources found %v: it no longer finds the variables", known)
	}
	return known
}

// loadConfig loads text as a configuration file with env applied, the way
// a node would, and validates it.
func loadConfig(t *testing.T, what, text string, env map[string]string) config.File {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	path := filepath.Join(t.TempDir(), "xcollect.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(path)
	if err == nil {
		err = f.Validate()
	}
	if err != nil {
		t.Fatalf("%s: the configuration does not load: %v", what, err)
	}
	return f
}

// listenerPorts returns the TCP ports of f's listeners by config key.
func listenerPorts(t *testing.T, what string, f config.File) map[string]int {
	t.Helper()
	out := map[string]int{}
	for key, addr := range map[string]*string{"c2s": f.Listeners.C2S, "c2s_tls": f.Listeners.C2STLS,
		"component": f.Listeners.Component, "http": f.Listeners.HTTP} {
		if *addr == "" {
			continue
		}
		out[key] = port(t, what+" listeners."+key, *addr)
	}
	return out
}

func port(t *testing.T, what, addr string) int {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		t.Fatalf("%s: %q is not host:port", what, addr)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("%s: %q listens on loopback only: unreachable from outside the container", what, addr)
	}
	return n
}

// requireExplicitListeners fails unless the raw file sets every listener,
// so that a change of a default (HTTP on loopback) cannot change a
// deployment.
func requireExplicitListeners(t *testing.T, what, text string) {
	t.Helper()
	var raw struct {
		Listeners map[string]string `yaml:"listeners"`
	}
	if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, k := range []string{"c2s", "c2s_tls", "component", "http"} {
		if _, ok := raw.Listeners[k]; !ok {
			t.Errorf("%s: listeners.%s is not set explicitly", what, k)
		}
	}
}

// checkHealthPath checks that path answers 200 on the node's HTTP handler and
// 503 while the store is down (what a readiness probe needs).
func checkHealthPath(t *testing.T, what, path string) {
	t.Helper()
	var storeErr error
	h := httpapi.Handler(httpapi.Deps{
		Self:   func() httpapi.Node { return httpapi.Node{Name: "n1"} },
		Health: func(context.Context) error { return storeErr },
	})
	get := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if code := get(); code != http.StatusOK {
		t.Errorf("%s: GET %s answers %d on a healthy node, want 200", what, path, code)
	}
	storeErr = errors.New("connection refused")
	if code := get(); code != http.StatusServiceUnavailable {
		t.Errorf("%s: GET %s answers %d while the store is down, want 503", what, path, code)
	}
}

// ---- Kubernetes ----

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port any `yaml:"port"`
	} `yaml:"tcpSocket"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	StartupProbe    *probe `yaml:"startupProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type statefulSetSpec struct {
	ServiceName string        `yaml:"serviceName"`
	Replicas    int           `yaml:"replicas"`
	Selector    labelSelector `yaml:"selector"`
	Template    struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			SecurityContext struct {
				RunAsNonRoot bool `yaml:"runAsNonRoot"`
				RunAsUser    int  `yaml:"runAsUser"`
			} `yaml:"securityContext"`
			Containers []container `yaml:"containers"`
			Volumes    []struct {
				Name   string `yaml:"name"`
				Secret *struct {
					SecretName string `yaml:"secretName"`
					Items      []struct {
						Key  string `yaml:"key"`
						Path string `yaml:"path"`
					} `yaml:"items"`
				} `yaml:"secret"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type serviceSpec struct {
	ClusterIP                string            `yaml:"clusterIP"`
	PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
	Selector                 map[string]string `yaml:"selector"`
	Ports                    []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		Protocol   string `yaml:"protocol"`
		TargetPort any    `yaml:"targetPort"`
	} `yaml:"ports"`
}

func readK8s(t *testing.T) map[string]map[string]k8sObject {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no kubernetes manifests: %v", err)
	}
	byKind := map[string]map[string]k8sObject{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o k8sObject
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if byKind[o.Kind] == nil {
				byKind[o.Kind] = map[string]k8sObject{}
			}
			byKind[o.Kind][o.Metadata.Name] = o
		}
	}
	// Every manifest is listed in the kustomization (kubectl apply -k).
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	data, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &kust); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(kust.Resources, b) {
			t.Errorf("kustomization.yaml does not list %s", b)
		}
	}
	return byKind
}

func decodeSpec[T any](t *testing.T, o k8sObject) T {
	t.Helper()
	var s T
	if err := o.Spec.Decode(&s); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Metadata.Name, err)
	}
	return s
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	known := knownEnv(t)
	objs := readK8s(t)
	if len(objs["StatefulSet"]) != 1 || len(objs["PodDisruptionBudget"]) != 1 {
		t.Fatalf("want one StatefulSet and one PodDisruptionBudget, have %v", objs)
	}
	var sts statefulSetSpec
	for _, o := range objs["StatefulSet"] {
		sts = decodeSpec[statefulSetSpec](t, o)
	}
	pod := sts.Template.Spec
	labels := sts.Template.Metadata.Labels
	if !matches(sts.Selector.MatchLabels, labels) {
		t.Errorf("StatefulSet selector %v does not select its pods %v", sts.Selector.MatchLabels, labels)
	}
	if sts.Replicas < 3 {
		t.Errorf("replicas %d: a cluster that survives one node needs 3", sts.Replicas)
	}
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("pod runs as root: %+v", pod.SecurityContext)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if sc := c.SecurityContext; sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext not hardened: %+v", sc)
	}
	if !slices.Equal(c.Args, []string{"serve"}) {
		t.Errorf("args %v, want [serve]", c.Args)
	}

	// The headless Service: join_dns resolves it to every pod, ready or not.
	headless, ok := objs["Service"][sts.ServiceName]
	if !ok {
		t.Fatalf("serviceName %q: no such Service", sts.ServiceName)
	}
	hs := decodeSpec[serviceSpec](t, headless)
	if hs.ClusterIP != "None" || !hs.PublishNotReadyAddresses || !matches(hs.Selector, labels) {
		t.Errorf("Service %s: want clusterIP None, publishNotReadyAddresses, selecting the pods: %+v", sts.ServiceName, hs)
	}

	// Environment: known names; secrets from keys that exist.
	env := map[string]string{}
	for _, e := range c.Env {
		if !known[e.Name] {
			t.Errorf("env %s: the binary does not read it", e.Name)
		}
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			sec, ok := objs["Secret"][ref.Name]
			if !ok {
				t.Errorf("env %s: Secret %s does not exist", e.Name, ref.Name)
				continue
			}
			v, ok := sec.StringData[ref.Key]
			if !ok {
				t.Errorf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[e.Name] = "xcollect-0"
		default:
			env[e.Name] = e.Value
		}
	}
	for _, want := range []string{"XCOLLECT_CONFIG", "XCOLLECT_POSTGRES_DSN", "XCOLLECT_CLUSTER_KEY", "XCOLLECT_NODE_NAME"} {
		if _, ok := env[want]; !ok {
			t.Errorf("env %s is not set", want)
		}
	}
	if env["XCOLLECT_CLUSTER_KEY"] != "REPLACE-ME" {
		t.Errorf("the shipped cluster key must be the placeholder, not %q", env["XCOLLECT_CLUSTER_KEY"])
	}

	// The configuration file: mounted where XCOLLECT_CONFIG points, from
	// the Secret, and it loads.
	var cfgText string
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if filepath.Join(m.MountPath, it.Path) == env["XCOLLECT_CONFIG"] {
					cfgText = objs["Secret"][v.Secret.SecretName].StringData[it.Key]
				}
			}
		}
	}
	if cfgText == "" {
		t.Fatalf("no Secret volume provides XCOLLECT_CONFIG=%s", env["XCOLLECT_CONFIG"])
	}
	requireExplicitListeners(t, "kubernetes config", cfgText)
	f := loadConfig(t, "kubernetes config", cfgText, map[string]string{
		"XCOLLECT_POSTGRES_DSN": env["XCOLLECT_POSTGRES_DSN"], "XCOLLECT_CLUSTER_KEY": testKey})
	if f.Cluster.JoinDNS != sts.ServiceName {
		t.Errorf("cluster.join_dns %q, want the headless Service %q", f.Cluster.JoinDNS, sts.ServiceName)
	}
	if f.Storage.Postgres.DSN == "" {
		t.Errorf("no Postgres: a cluster needs the shared store")
	}

	// Ports: every listener of the configuration, gossip (TCP and UDP) and
	// the link are container ports; the headless Service carries the
	// cluster ports.
	byName := map[string]int{}
	has := map[string]bool{}
	for _, p := range c.Ports {
		byName[p.Name] = p.ContainerPort
		proto := p.Protocol
		if proto == "" {
			proto = "TCP"
		}
		has[fmt.Sprintf("%d/%s", p.ContainerPort, proto)] = true
	}
	ports := listenerPorts(t, "kubernetes config", f)
	gossip := port(t, "cluster.bind", f.Cluster.Bind)
	link := port(t, "cluster.link", f.Cluster.Link)
	for key, p := range ports {
		if !has[fmt.Sprintf("%d/TCP", p)] {
			t.Errorf("listeners.%s port %d is not a container port", key, p)
		}
	}
	for _, want := range []string{fmt.Sprintf("%d/TCP", gossip), fmt.Sprintf("%d/UDP", gossip), fmt.Sprintf("%d/TCP", link)} {
		if !has[want] {
			t.Errorf("cluster port %s is not a container port", want)
		}
		found := false
		for _, sp := range hs.Ports {
			proto := sp.Protocol
			if proto == "" {
				proto = "TCP"
			}
			found = found || fmt.Sprintf("%d/%s", sp.Port, proto) == want
		}
		if !found {
			t.Errorf("the headless Service lacks cluster port %s", want)
		}
	}
	resolve := func(what string, p any) int {
		switch v := p.(type) {
		case int:
			return v
		case string:
			if n, ok := byName[v]; ok {
				return n
			}
		}
		t.Errorf("%s: port %v is not a container port", what, p)
		return 0
	}
	// The client Service targets the listeners.
	for name, o := range objs["Service"] {
		if name == sts.ServiceName {
			continue
		}
		s := decodeSpec[serviceSpec](t, o)
		if !matches(s.Selector, labels) {
			t.Errorf("Service %s does not select the pods", name)
		}
		for _, sp := range s.Ports {
			target := sp.TargetPort
			if target == nil {
				target = sp.Port
			}
			if n := resolve("Service "+name+" "+sp.Name, target); n != 0 && !slices.Contains(mapValues(ports), n) {
				t.Errorf("Service %s port %s targets %d, which no listener uses", name, sp.Name, n)
			}
		}
	}

	// Probes: readiness on a path the node serves (store reachable),
	// liveness that does not depend on the database.
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		t.Fatal("no HTTP readiness probe")
	}
	if n := resolve("readinessProbe", c.ReadinessProbe.HTTPGet.Port); n != ports["http"] {
		t.Errorf("readinessProbe port %d, want listeners.http %d", n, ports["http"])
	}
	checkHealthPath(t, "readinessProbe", c.ReadinessProbe.HTTPGet.Path)
	for what, p := range map[string]*probe{"livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe} {
		if p == nil || p.TCPSocket == nil {
			t.Errorf("%s: want a tcpSocket probe (a database outage must not restart pods)", what)
			continue
		}
		if n := resolve(what, p.TCPSocket.Port); !slices.Contains(mapValues(ports), n) {
			t.Errorf("%s port %d is no listener's", what, n)
		}
	}

	for _, o := range objs["PodDisruptionBudget"] {
		pdb := decodeSpec[struct {
			MaxUnavailable int           `yaml:"maxUnavailable"`
			Selector       labelSelector `yaml:"selector"`
		}](t, o)
		if pdb.MaxUnavailable != 1 || !matches(pdb.Selector.MatchLabels, labels) {
			t.Errorf("PodDisruptionBudget: want maxUnavailable 1 over the pods: %+v", pdb)
		}
	}
}

func mapValues(m map[string]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// ---- Compose ----

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Networks    yaml.Node         `yaml:"networks"`
	Healthcheck struct {
		Test    []string `yaml:"test"`
		Disable bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

func (s composeService) aliases(t *testing.T) []string {
	var nets map[string]struct {
		Aliases []string `yaml:"aliases"`
	}
	if s.Networks.Kind != yaml.MappingNode {
		return nil
	}
	if err := s.Networks.Decode(&nets); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range nets {
		out = append(out, n.Aliases...)
	}
	return out
}

// flagValue returns the value of --name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func TestCompose(t *testing.T) {
	known := knownEnv(t)
	data, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cf struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatal(err)
	}
	pg, ok := cf.Services["postgres"]
	if !ok || !strings.HasPrefix(pg.Image, "postgres:15") || len(pg.Healthcheck.Test) == 0 {
		t.Fatalf("want a postgres:15 service with a healthcheck: %+v", pg)
	}
	// reaches: the chain of depends_on from name reaches postgres
	// with condition service_healthy.
	var reaches func(name string, seen map[string]bool) bool
	reaches = func(name string, seen map[string]bool) bool {
		if seen[name] {
			return false
		}
		seen[name] = true
		for dep, d := range cf.Services[name].DependsOn {
			if dep == "postgres" && d.Condition == "service_healthy" {
				return true
			}
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
			} else if reaches(dep, seen) {
				return true
			}
		}
		return false
	}
	var nodes []string
	names := map[string]bool{}
	var f config.File
	for name, s := range cf.Services {
		for k := range s.Environment {
			if strings.HasPrefix(k, "XCOLLECT_") && !known[k] {
				t.Errorf("%s: env %s: the binary does not read it", name, k)
			}
		}
		if name == "postgres" {
			continue
		}
		if s.Image == "" || len(s.Command) == 0 {
			t.Errorf("%s: want image and command", name)
			continue
		}
		if !reaches(name, map[string]bool{}) {
			t.Errorf("%s does not wait for a healthy postgres", name)
		}
		if s.Command[0] != "serve" {
			continue
		}
		nodes = append(nodes, name)
		nodeName := s.Environment["XCOLLECT_NODE_NAME"]
		if nodeName == "" || names[nodeName] {
			t.Errorf("%s: XCOLLECT_NODE_NAME %q missing or not unique", name, nodeName)
		}
		names[nodeName] = true
		if !strings.HasPrefix(s.Environment["XCOLLECT_CLUSTER_KEY"], "${XCOLLECT_CLUSTER_KEY:?") {
			t.Errorf("%s: the cluster key must come from the caller's environment (required): %q", name, s.Environment["XCOLLECT_CLUSTER_KEY"])
		}
		if s.Healthcheck.Disable || !slices.Equal(s.Healthcheck.Test, []string{"CMD", "/usr/local/bin/xcollect", "healthcheck"}) {
			t.Errorf("%s: healthcheck %v, want the xcollect healthcheck", name, s.Healthcheck.Test)
		}
		// The configuration: the host file mounted at XCOLLECT_CONFIG.
		var text string
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == s.Environment["XCOLLECT_CONFIG"] {
				b, err := os.ReadFile(parts[0])
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				text = string(b)
			}
		}
		if text == "" {
			t.Fatalf("%s: nothing mounted at XCOLLECT_CONFIG=%q", name, s.Environment["XCOLLECT_CONFIG"])
		}
		requireExplicitListeners(t, name, text)
		dsn := s.Environment["XCOLLECT_POSTGRES_DSN"]
		f = loadConfig(t, name, text, map[string]string{"XCOLLECT_POSTGRES_DSN": dsn, "XCOLLECT_CLUSTER_KEY": testKey})
		want := fmt.Sprintf("postgres://%s:%s@postgres:5432/%s?", pg.Environment["POSTGRES_USER"], pg.Environment["POSTGRES_PASSWORD"], pg.Environment["POSTGRES_DB"])
		if !strings.HasPrefix(dsn, want) {
			t.Errorf("%s: DSN %q does not match the postgres service (%s…)", name, dsn, want)
		}
		if f.Cluster.JoinDNS == "" || !slices.Contains(s.aliases(t), f.Cluster.JoinDNS) {
			t.Errorf("%s: cluster.join_dns %q is not one of its network aliases %v", name, f.Cluster.JoinDNS, s.aliases(t))
		}
		ports := listenerPorts(t, name, f)
		published := map[int]bool{}
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			n, err := strconv.Atoi(parts[len(parts)-1])
			if err != nil {
				t.Errorf("%s: port %q", name, p)
			}
			published[n] = true
			if len(parts) != 3 || parts[0] != "127.0.0.1" {
				t.Errorf("%s: port %q: publish on 127.0.0.1 only (a demo)", name, p)
			}
		}
		for key, p := range ports {
			if !published[p] {
				t.Errorf("%s: listeners.%s port %d is not published", name, key, p)
			}
		}
	}
	slices.Sort(nodes)
	if len(nodes) != 3 {
		t.Fatalf("want 3 node services, have %v", nodes)
	}
	// The processor: a configured component, its secret, a node's
	// component listener through the cluster's name.
	var proc *composeService
	for _, s := range cf.Services {
		if len(s.Command) > 0 && s.Command[0] == "process" {
			proc = &s
		}
	}
	if proc == nil {
		t.Fatal("no processor service (command process)")
	}
	j := flagValue(proc.Command, "jid")
	i := slices.IndexFunc(f.Components, func(c config.Component) bool { return c.JID == j })
	if i < 0 {
		t.Fatalf("processor --jid %q is not a configured component", j)
	}
	if proc.Environment["XCOLLECT_COMPONENT_SECRET"] != f.Components[i].Secret {
		t.Errorf("processor secret %q, the configuration has %q", proc.Environment["XCOLLECT_COMPONENT_SECRET"], f.Components[i].Secret)
	}
	host, p, err := net.SplitHostPort(flagValue(proc.Command, "addr"))
	if err != nil || host != f.Cluster.JoinDNS || p != strconv.Itoa(listenerPorts(t, "node", f)["component"]) {
		t.Errorf("processor --addr %q: want %s:<listeners.component port>", flagValue(proc.Command, "addr"), f.Cluster.JoinDNS)
	}
	if !proc.Healthcheck.Disable {
		t.Errorf("processor: the image's health check asks an HTTP listener the processor does not have: disable it")
	}
}

// ---- Dockerfile and the static binary ----

func dockerfile(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	cur := ""
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur += s + " "
			continue
		}
		cur += line
		if strings.TrimSpace(cur) != "" {
			out = append(out, strings.TrimSpace(cur))
		}
		cur = ""
	}
	return out
}

func TestDockerfile(t *testing.T) {
	known := knownEnv(t)
	lines := dockerfile(t)
	var stages []int
	for i, l := range lines {
		if strings.HasPrefix(l, "FROM ") {
			stages = append(stages, i)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, have %d stage(s)", len(stages))
	}
	build, final := lines[stages[0]:stages[len(stages)-1]], lines[stages[len(stages)-1]:]
	if !slices.ContainsFunc(build, func(l string) bool {
		return strings.HasPrefix(l, "RUN ") && strings.Contains(l, "CGO_ENABLED=0 go build") && strings.Contains(l, "./cmd/xcollect")
	}) {
		t.Error("the build stage does not build ./cmd/xcollect with CGO_ENABLED=0")
	}
	// The Go of the build image is the one go.mod asks for.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil || !slices.Contains(lines, "ARG GO_VERSION="+string(m[1])) {
		t.Errorf("ARG GO_VERSION is not go.mod's go %s", m[1])
	}
	get := func(instr string) []string {
		var out []string
		for _, l := range final {
			if v, ok := strings.CutPrefix(l, instr+" "); ok {
				out = append(out, v)
			}
		}
		return out
	}
	users := get("USER")
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1], "0") || strings.HasPrefix(users[len(users)-1], "root") {
		t.Errorf("the final stage must run as a non-root USER, has %v", users)
	}
	if hc := get("HEALTHCHECK"); len(hc) != 1 || !strings.Contains(hc[0], `CMD ["/usr/local/bin/xcollect", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %v, want the xcollect healthcheck (no shell in the image)", hc)
	}
	if ep := get("ENTRYPOINT"); len(ep) != 1 || ep[0] != `["/usr/local/bin/xcollect"]` || !slices.Contains(get("COPY"), "--from=build /out/xcollect /usr/local/bin/xcollect") {
		t.Errorf("ENTRYPOINT %v is not the binary the build stage copies", ep)
	}
	// The baked configuration: where XCOLLECT_CONFIG points, and it loads.
	env := map[string]string{}
	for _, e := range get("ENV") {
		k, v, _ := strings.Cut(e, "=")
		if !known[k] {
			t.Errorf("ENV %s: the binary does not read it", k)
		}
		env[k] = v
	}
	if !slices.Contains(get("COPY"), "deployments/container.yaml "+env["XCOLLECT_CONFIG"]) {
		t.Fatalf("XCOLLECT_CONFIG=%q is not the copied deployments/container.yaml", env["XCOLLECT_CONFIG"])
	}
	text, err := os.ReadFile("container.yaml")
	if err != nil {
		t.Fatal(err)
	}
	requireExplicitListeners(t, "container.yaml", string(text))
	f := loadConfig(t, "container.yaml", string(text), nil)
	exposed := strings.Fields(strings.Join(get("EXPOSE"), " "))
	for key, p := range listenerPorts(t, "container.yaml", f) {
		if !slices.Contains(exposed, strconv.Itoa(p)) {
			t.Errorf("listeners.%s port %d is not EXPOSEd (%v)", key, p, exposed)
		}
	}
	for _, want := range []string{"7946", "7946/udp", "7947"} {
		if !slices.Contains(exposed, want) {
			t.Errorf("cluster port %s is not EXPOSEd", want)
		}
	}
	if vol := get("VOLUME"); len(vol) != 1 || vol[0] != f.DataDir {
		t.Errorf("VOLUME %v, want data_dir %s", vol, f.DataDir)
	}
	if _, err := os.Stat("Dockerfile.dockerignore"); err != nil {
		t.Errorf("no Dockerfile.dockerignore: the context would carry bin/, data/, node_modules: %v", err)
	}
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
	buildDir  string
)

// staticBinary builds cmd/xcollect the way the Dockerfile does.
func staticBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "xcollect-deploy-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "xcollect")
		cmd := exec.Command("go", "build", "-trimpath", "-o", buildBin, "./cmd/xcollect")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func TestStaticBinary(t *testing.T) {
	bin := staticBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s asks for a dynamic loader: not static", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", bin, libs)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "xcollect ") {
		t.Errorf("xcollect version: %v %s", err, out)
	}
}

// ---- systemd ----

func TestSystemdUnit(t *testing.T) {
	known := knownEnv(t)
	data, err := os.ReadFile("xcollect.service")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	for k, want := range map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "CapabilityBoundingSet": "",
		"ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
		"StateDirectory": "xcollect", "KillSignal": "SIGTERM",
	} {
		if v := keys[k]; len(v) != 1 || v[0] != want {
			t.Errorf("%s=%v, want %q", k, v, want)
		}
	}
	for _, e := range keys["Environment"] {
		k, v, _ := strings.Cut(e, "=")
		if !known[k] {
			t.Errorf("Environment=%s: the binary does not read it", k)
		}
		if k == "XCOLLECT_DATA_DIR" && v != "/var/lib/"+keys["StateDirectory"][0] {
			t.Errorf("XCOLLECT_DATA_DIR=%s is not the StateDirectory", v)
		}
	}
	exe := strings.Fields(keys["ExecStart"][0])[0]
	// systemd-analyze (Debian package systemd, installed by
	// scripts/test-deps.sh) checks the unit as systemd would load it; it
	// wants ExecStart to exist, so the copy runs the binary built here.
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found (Debian package systemd; scripts/test-deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	unit := filepath.Join(dir, "xcollect.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(data, []byte(exe), []byte(staticBinary(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || strings.Contains(string(out), "xcollect.service") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The exposure score of systemd's own review (0 best, 10 worst).
	out, err = exec.Command(sa, "security", "--offline=true", unit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for xcollect.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security --offline=true: exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure %.1f, want at most 2.0\n%s", score, out)
	}
}

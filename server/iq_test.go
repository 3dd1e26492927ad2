package server

import (
	"slices"
	"strings"
	"testing"
)

// TestIQTable checks the table's invariants: one service per (target,
// type, namespace), a handler on every row, and disco#info generated from
// exactly the table's features.
func TestIQTable(t *testing.T) {
	s := &Server{}
	s.iqs = s.iqServices()
	type key struct {
		target  iqTarget
		typ, ns string
	}
	seen := map[key]bool{}
	for _, sv := range s.iqs.services {
		if sv.handle == nil || sv.ns == "" || len(sv.types) == 0 {
			t.Errorf("incomplete IQ service %+v", sv)
		}
		for _, typ := range sv.types {
			k := key{sv.target, typ, sv.ns}
			if seen[k] {
				t.Errorf("two IQ services for %+v", k)
			}
			seen[k] = true
			if s.iqs.lookup(sv.target, typ, sv.ns) == nil {
				t.Errorf("lookup misses %+v", k)
			}
		}
	}
	if s.iqs.lookup(forServer, "set", nsVersion) != nil {
		t.Error("a version set found a service")
	}
	fs := s.iqs.features()
	if !slices.IsSorted(fs) || len(slices.Compact(slices.Clone(fs))) != len(fs) {
		t.Errorf("features not sorted and unique: %v", fs)
	}
	for _, want := range []string{nsDiscoInfo, nsDiscoItems, nsPing, nsVersion, nsRoster, nsStreamManagement, featureOffline} {
		if !slices.Contains(fs, want) {
			t.Errorf("features lack %s: %v", want, fs)
		}
	}
	got := string(s.discoInfo(nil, &stanza{name: "iq", id: "d1"}))
	if n := strings.Count(got, "<feature "); n != len(fs) {
		t.Errorf("disco#info lists %d features, the table has %d: %s", n, len(fs), got)
	}
}

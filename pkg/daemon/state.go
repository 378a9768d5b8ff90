package daemon

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/l4lb/l4lb/pkg/lb"
)

// stateFile is what survives a restart besides the pinned maps: the operators' overrides.
type stateFile struct {
	Overrides []overrideEntry `json:"overrides"`
	// Deny: prefixes added to the prefilter's deny list at run time (prefilter.go). A
	// file from a release without it reads as an empty list.
	Deny []netip.Prefix `json:"deny,omitempty"`
}

// stateMu serialises the read-modify-write of the state file's sections.
var stateMu sync.Mutex

type overrideEntry struct {
	VIP     string     `json:"vip"`
	Backend netip.Addr `json:"backend"`
	lb.Override
}

func loadOverrides(path string) (lb.Overrides, error) {
	ov := lb.Overrides{}
	if path == "" {
		return ov, nil
	}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return ov, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("parse state file %s: %w", path, err)
	}
	for _, e := range sf.Overrides {
		ov[lb.BackendKey{VIP: e.VIP, Backend: e.Backend}] = e.Override
	}
	return ov, nil
}

// saveOverrides writes the file atomically (temp file, fsync, rename).
func saveOverrides(path string, ov lb.Overrides) error {
	if path == "" {
		return nil
	}
	return updateState(path, func(sf *stateFile) {
		sf.Overrides = nil
		for k, o := range ov {
			sf.Overrides = append(sf.Overrides, overrideEntry{VIP: k.VIP, Backend: k.Backend, Override: o})
		}
		sort.Slice(sf.Overrides, func(i, j int) bool {
			if sf.Overrides[i].VIP != sf.Overrides[j].VIP {
				return sf.Overrides[i].VIP < sf.Overrides[j].VIP
			}
			return sf.Overrides[i].Backend.Less(sf.Overrides[j].Backend)
		})
	})
}

// updateState rewrites one section of the state file (change), keeping the others.
func updateState(path string, change func(*stateFile)) error {
	stateMu.Lock()
	defer stateMu.Unlock()
	sf, err := readState(path)
	if err != nil {
		return err
	}
	change(&sf)
	return writeState(path, sf)
}

// writeState writes the file atomically (temp file, fsync, rename).
func writeState(path string, sf stateFile) error {
	b, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

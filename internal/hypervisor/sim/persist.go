package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// stateFile is what a Host persists.
type stateFile struct {
	NextPid int            `json:"nextPid"`
	VMs     map[string]*vm `json:"vms"`
}

// load reads the state file; a missing file is an empty host. Incoming
// reservations are dropped: their migration died with the old process.
func (h *Host) load() error {
	b, err := os.ReadFile(h.cfg.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sim: load state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("sim: load state %s: %w", h.cfg.StateFile, err)
	}
	for id, v := range st.VMs {
		if v == nil || v.Incoming {
			continue
		}
		h.vms[id] = v
	}
	if st.NextPid > h.nextPid {
		h.nextPid = st.NextPid
	}
	return nil
}

// saveLocked writes the state file atomically when one is configured.
func (h *Host) saveLocked() error {
	if h.cfg.StateFile == "" {
		return nil
	}
	b, err := json.Marshal(stateFile{NextPid: h.nextPid, VMs: h.vms})
	if err != nil {
		return fmt.Errorf("sim: save state: %w", err)
	}
	tmp := h.cfg.StateFile + ".tmp"
	if err := os.MkdirAll(filepath.Dir(h.cfg.StateFile), 0o700); err != nil {
		return fmt.Errorf("sim: save state: %w", err)
	}
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("sim: save state: %w", err)
	}
	if err := os.Rename(tmp, h.cfg.StateFile); err != nil {
		return fmt.Errorf("sim: save state: %w", err)
	}
	return nil
}

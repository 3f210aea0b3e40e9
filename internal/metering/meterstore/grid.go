package meterstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/metering"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// SettingsGrid returns a Grid function over the cluster's energy
// settings (PUE, intensity, per-site intensities: /vpool/cluster/balance)
// and, when series is not nil, a time series that overrides them.
func SettingsGrid(series func() map[string][]metering.Point) func(ctx context.Context, st store.Store) (metering.Grid, error) {
	return func(ctx context.Context, st store.Store) (metering.Grid, error) {
		set := model.DefaultBalanceSettings()
		kv, err := st.Get(ctx, store.BalanceKey)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return metering.Grid{}, fmt.Errorf("meterstore: read energy settings: %w", err)
		default:
			if err := json.Unmarshal(kv.Value, &set); err != nil {
				return metering.Grid{}, fmt.Errorf("meterstore: decode energy settings: %w", err)
			}
		}
		ms, _, err := ReadSettings(ctx, st)
		if err != nil {
			return metering.Grid{}, err
		}
		g := metering.Grid{PUE: set.Energy.PUE, Default: set.Energy.GridIntensity, Sites: ms.Sites}
		if series != nil {
			g.Series = series()
		}
		return g, nil
	}
}

// ReadSettings reads metering's settings and their revision (0: none
// stored).
func ReadSettings(ctx context.Context, st store.Store) (model.MeteringSettings, int64, error) {
	var ms model.MeteringSettings
	kv, err := st.Get(ctx, store.MeteringSettingsKey)
	if errors.Is(err, store.ErrNotFound) {
		return ms, 0, nil
	}
	if err != nil {
		return ms, 0, fmt.Errorf("meterstore: read settings: %w", err)
	}
	if err := json.Unmarshal(kv.Value, &ms); err != nil {
		return ms, 0, fmt.Errorf("meterstore: decode settings: %w", err)
	}
	return ms, kv.ModRev, nil
}

// SeriesFile reads a grid-intensity file (metering.ParseSeries) and
// reads it again when it changes; a file that stops parsing keeps the
// last good series (and says so in the log).
func SeriesFile(path string, log *slog.Logger) func() map[string][]metering.Point {
	var mu sync.Mutex
	var last map[string][]metering.Point
	var mtime time.Time
	var size int64
	return func() map[string][]metering.Point {
		mu.Lock()
		defer mu.Unlock()
		fi, err := os.Stat(path)
		if err != nil {
			log.Warn("grid intensity file", "file", path, "err", err)
			return last
		}
		if fi.ModTime().Equal(mtime) && fi.Size() == size {
			return last
		}
		f, err := os.Open(path)
		if err != nil {
			log.Warn("grid intensity file", "file", path, "err", err)
			return last
		}
		defer f.Close()
		s, err := metering.ParseSeries(f)
		if err != nil {
			log.Warn("grid intensity file", "file", path, "err", err)
			return last
		}
		last, mtime, size = s, fi.ModTime(), fi.Size()
		return last
	}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
)

// The cluster CA lives in the store with its private key sealed
// (pki.Seal) by a key that never enters the store: a file in the
// server's data dir (Config.CAKeyFile). A local user who reads the store
// gets the CA certificate and ciphertext only.

// loadOrCreateCA reads the CA from the store and opens its sealed key,
// or creates and stores it; when two servers race, the first write wins
// (IfAbsent) and both use it. A CA stored in plaintext by an older
// server is sealed in place.
func (s *Server) loadOrCreateCA(ctx context.Context) (*pki.CA, error) {
	for range 3 {
		kv, err := s.cfg.Store.Get(ctx, store.CAKey)
		if err == nil {
			ca, done, err := s.openCA(ctx, kv)
			if done || err != nil {
				return ca, err
			}
			continue
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("server: read CA: %w", err)
		}
		key, err := s.sealKey(true)
		if err != nil {
			return nil, err
		}
		ca, err := pki.NewCA(s.now())
		if err != nil {
			return nil, err
		}
		sealed, err := ca.Seal(key)
		if err != nil {
			return nil, err
		}
		ok, _, err := s.cfg.Store.Txn(ctx, []store.Cond{store.IfAbsent(store.CAKey)}, []store.Op{store.Put(store.CAKey, sealed)})
		if err != nil {
			return nil, fmt.Errorf("server: store CA: %w", err)
		}
		if ok {
			s.log.Info("created cluster CA", "hash", ca.Hash(), "sealKey", pki.SealKeyID(key))
			return ca, nil
		}
	}
	return nil, errors.New("server: could not agree on a cluster CA")
}

// openCA opens the stored CA; done false means a plaintext CA changed
// under the attempt to seal it (read again).
func (s *Server) openCA(ctx context.Context, kv store.KV) (*pki.CA, bool, error) {
	if _, err := pki.OpenCA(kv.Value, nil); !errors.Is(err, pki.ErrPlainCAKey) {
		key, err := s.sealKey(false)
		if err != nil {
			return nil, false, err
		}
		ca, err := pki.OpenCA(kv.Value, key)
		if err != nil {
			return nil, false, fmt.Errorf("server: open the cluster CA with %s: %w", s.sealKeyWhere(), err)
		}
		return ca, true, nil
	}
	key, err := s.sealKey(true)
	if err != nil {
		return nil, false, err
	}
	ca, err := pki.ParseCA(kv.Value)
	if err != nil {
		return nil, false, err
	}
	sealed, err := ca.Seal(key)
	if err != nil {
		return nil, false, err
	}
	ok, _, err := s.cfg.Store.Txn(ctx, []store.Cond{store.IfRev(store.CAKey, kv.ModRev)}, []store.Op{store.Put(store.CAKey, sealed)})
	if err != nil {
		return nil, false, fmt.Errorf("server: seal CA: %w", err)
	}
	if ok {
		s.log.Warn("the cluster CA's key was stored in plaintext and is now sealed; whoever could read the store before may hold a copy",
			"sealKey", pki.SealKeyID(key), "file", s.sealKeyWhere())
	}
	return ca, ok, nil
}

// sealKey returns the CA seal key: read from CAKeyFile (or the data
// dir's default), created there when create is set and no file exists.
// Without a file (no data dir), a key in memory.
func (s *Server) sealKey(create bool) ([]byte, error) {
	path := s.sealKeyPath()
	if path == "" {
		if s.memSealKey == nil {
			k, err := pki.NewSealKey()
			if err != nil {
				return nil, err
			}
			s.memSealKey = k
		}
		return s.memSealKey, nil
	}
	key, err := pki.ReadSealKey(path)
	switch {
	case err == nil:
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("server: %w", err)
	case !create:
		return nil, fmt.Errorf("server: the cluster CA in the store is sealed, and this server has no seal key at %s: copy that file from a server of this cluster (or name it with --ca-key-file): %w", path, err)
	}
	if key, err = pki.NewSealKey(); err != nil {
		return nil, err
	}
	if err := pki.WriteSealKey(path, key); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return key, nil
}

func (s *Server) sealKeyPath() string {
	switch {
	case s.cfg.CAKeyFile != "":
		return s.cfg.CAKeyFile
	case s.cfg.DataDir != "":
		return filepath.Join(s.cfg.DataDir, DefaultCAKeyFile)
	}
	return ""
}

func (s *Server) sealKeyWhere() string {
	if p := s.sealKeyPath(); p != "" {
		return p
	}
	return "the in-memory seal key"
}

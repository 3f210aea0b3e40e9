package qemu

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// KeyStore keeps the LUKS key of every encrypted volume. The driver asks
// for a key when it creates a volume (create=true) and whenever QEMU opens
// it; keys reach QEMU only through an inherited pipe, never argv or disk.
type KeyStore interface {
	VolumeKey(ctx context.Context, vmID, disk string, create bool) ([]byte, error)
	DeleteKeys(ctx context.Context, vmID string) error
}

// FileKeys keeps volume keys in Dir, each sealed (AES-256-GCM) under a
// master key. The master key is MasterKey when set (the agent passes the
// cluster's key), otherwise Dir/master.key, made on first use (0600).
type FileKeys struct {
	Dir       string
	MasterKey []byte // 32 bytes

	mu sync.Mutex
}

var errNoKey = errors.New("qemu: volume key not found")

// VolumeKey returns the passphrase of vmID's disk, making one if create.
func (k *FileKeys) VolumeKey(_ context.Context, vmID, disk string, create bool) ([]byte, error) {
	if validID(vmID) != nil || !fileNameRe.MatchString(disk) {
		return nil, fmt.Errorf("qemu: volume key: bad vm id %q or disk name %q", vmID, disk)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	aead, err := k.aead()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(k.Dir, vmID, disk+".key")
	sealed, err := os.ReadFile(path)
	if err == nil {
		ns := aead.NonceSize()
		if len(sealed) < ns {
			return nil, fmt.Errorf("qemu: key file %s is truncated", path)
		}
		key, err := aead.Open(nil, sealed[:ns], sealed[ns:], []byte(vmID+"/"+disk))
		if err != nil {
			return nil, fmt.Errorf("qemu: unsealing key of %s/%s: %w", vmID, disk, err)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	if !create {
		return nil, fmt.Errorf("%w: %s/%s", errNoKey, vmID, disk)
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	key := []byte(base64.RawStdEncoding.EncodeToString(raw)) // a printable passphrase
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out := aead.Seal(nonce, nonce, key, []byte(vmID+"/"+disk))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	if err := writeFileAtomic(path, out, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// DeleteKeys forgets every key of vmID.
func (k *FileKeys) DeleteKeys(_ context.Context, vmID string) error {
	if err := validID(vmID); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(k.Dir, vmID)); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}

func (k *FileKeys) aead() (cipher.AEAD, error) {
	mk := k.MasterKey
	if mk == nil {
		var err error
		if mk, err = k.masterFromFile(); err != nil {
			return nil, err
		}
	}
	if len(mk) != 32 {
		return nil, fmt.Errorf("qemu: master key has %d bytes, want 32", len(mk))
	}
	block, err := aes.NewCipher(mk)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	return cipher.NewGCM(block)
}

func (k *FileKeys) masterFromFile() ([]byte, error) {
	path := filepath.Join(k.Dir, "master.key")
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	if err := os.MkdirAll(k.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	b = make([]byte, 32)
	rand.Read(b)
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return nil, err
	}
	return b, nil
}

// keyPipe returns a pipe whose read end yields key then EOF; QEMU (or
// qemu-img) inherits the read end and reads it as /dev/fd/N. The caller
// closes the returned file after the child started.
func keyPipe(key []byte) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	// A key is far below the pipe buffer: the write never blocks.
	_, err = w.Write(key)
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("qemu: writing key pipe: %w", err)
	}
	return r, nil
}

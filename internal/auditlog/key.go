package auditlog

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
)

// The servers' audit signing key is stored like the cluster CA's key:
// the private key sealed (pki.SealBytes) with the CA seal key
// (DATA_DIR/ca-seal.key), the public key in clear. Every server that
// holds the seal key signs with the same key; whoever reads the store
// cannot. The first server to store a key wins; the others use it.

// sealAD binds a sealed audit key to its purpose and public key.
func sealAD(pub string) []byte { return []byte("vpool audit signing key\x00" + pub) }

// LoadOrCreateKey returns the cluster's audit signer, creating and
// storing the key on first use.
func LoadOrCreateKey(ctx context.Context, st store.Store, sealKey []byte, now time.Time) (*audit.Signer, error) {
	for range 3 {
		kv, err := st.Get(ctx, store.AuditKeyKey)
		if err == nil {
			return openKey(kv.Value, sealKey)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("auditlog: read signing key: %w", err)
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("auditlog: generate signing key: %w", err)
		}
		enc := audit.EncodePublicKey(pub)
		sealed, err := pki.SealBytes(sealKey, priv.Seed(), sealAD(enc))
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(model.AuditKey{KeyID: audit.KeyID(pub), PublicKey: enc, Sealed: base64.StdEncoding.EncodeToString(sealed), CreatedAt: now.UTC()})
		if err != nil {
			return nil, fmt.Errorf("auditlog: encode signing key: %w", err)
		}
		ok, _, err := st.Txn(ctx, []store.Cond{store.IfAbsent(store.AuditKeyKey)}, []store.Op{store.Put(store.AuditKeyKey, b)})
		if err != nil {
			return nil, fmt.Errorf("auditlog: store signing key: %w", err)
		}
		if ok {
			return audit.NewSigner(priv), nil
		}
	}
	return nil, errors.New("auditlog: could not agree on a signing key")
}

func openKey(b, sealKey []byte) (*audit.Signer, error) {
	var k model.AuditKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("auditlog: decode signing key: %w", err)
	}
	pub, err := audit.ParsePublicKey(k.PublicKey)
	if err != nil {
		return nil, err
	}
	sealed, err := base64.StdEncoding.DecodeString(k.Sealed)
	if err != nil {
		return nil, fmt.Errorf("auditlog: the sealed signing key is malformed: %w", err)
	}
	seed, err := pki.OpenBytes(sealKey, sealed, sealAD(k.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("auditlog: open the audit signing key with the CA seal key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("auditlog: the sealed signing key is malformed")
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if !priv.Public().(ed25519.PublicKey).Equal(pub) {
		return nil, errors.New("auditlog: the sealed signing key does not match its public key")
	}
	return audit.NewSigner(priv), nil
}

// PublicKey reads the published public key (no seal key needed).
func PublicKey(ctx context.Context, st store.Store) (model.AuditKey, error) {
	var k model.AuditKey
	kv, err := st.Get(ctx, store.AuditKeyKey)
	if err != nil {
		return k, fmt.Errorf("auditlog: read signing key: %w", err)
	}
	if err := json.Unmarshal(kv.Value, &k); err != nil {
		return k, fmt.Errorf("auditlog: decode signing key: %w", err)
	}
	k.Sealed = ""
	return k, nil
}

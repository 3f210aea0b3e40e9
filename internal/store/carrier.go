package store

import "context"

// Carrier is what a request's context may carry for the transactions
// made for it: one more write that must commit with the request's
// change — the request's audit intent (internal/auditlog). A wrapper of
// the store adds it to a request's transactions; code that commits
// several requests' changes in one transaction (group commit) adds each
// request's (CarriedOp).
type Carrier interface {
	// Intent returns the key and bytes of the write ("" when there is
	// none), made once.
	Intent() (key string, value []byte)
}

type carrierKey struct{}

// WithCarrier returns ctx carrying c.
func WithCarrier(ctx context.Context, c Carrier) context.Context {
	return context.WithValue(ctx, carrierKey{}, c)
}

// CarrierFrom returns ctx's carrier (nil: none).
func CarrierFrom(ctx context.Context) Carrier {
	c, _ := ctx.Value(carrierKey{}).(Carrier)
	return c
}

// CarriedOp returns the put of ctx's carrier's write (false: none).
func CarriedOp(ctx context.Context) (Op, bool) {
	if c := CarrierFrom(ctx); c != nil {
		if k, v := c.Intent(); k != "" {
			return Put(k, v), true
		}
	}
	return Op{}, false
}

// WithoutCarrier returns ctx carrying no carrier: for work a request
// does on behalf of others too (a group commit led by one caller), whose
// transactions must not carry that request's write.
func WithoutCarrier(ctx context.Context) context.Context {
	if CarrierFrom(ctx) == nil {
		return ctx
	}
	return context.WithValue(ctx, carrierKey{}, nil)
}

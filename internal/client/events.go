package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// FollowEvents streams events (GET /events?follow=true, one JSON event per
// line) whose ID is above since, of one project when project is not empty.
//
// Events arrive on the first channel in order. When the stream breaks after
// it was established, FollowEvents reconnects with backoff from the last ID
// it saw, so no event is lost or repeated. The error channel receives at
// most one error — the first connection failed, or the server refused (an
// *api.Error) — and then both channels are closed. Cancelling ctx closes
// both channels without an error.
func (c *Client) FollowEvents(ctx context.Context, since int64, project string) (<-chan model.Event, <-chan error) {
	events := make(chan model.Event, 64)
	errs := make(chan error, 1)
	go func() {
		defer close(events)
		defer close(errs)
		last := since
		connected := false
		backoff := c.pollMin
		for {
			got, err := c.followOnce(ctx, &last, project, events)
			if ctx.Err() != nil {
				return
			}
			connected = connected || got
			var apiErr *api.Error
			if errors.As(err, &apiErr) || (!connected && err != nil) {
				errs <- err
				return
			}
			if got {
				backoff = c.pollMin
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, c.pollMax)
		}
	}()
	return events, errs
}

// followOnce reads one streaming response until it ends. It reports
// whether the stream was established (a 2xx answer came).
func (c *Client) followOnce(ctx context.Context, last *int64, project string, out chan<- model.Event) (bool, error) {
	q := eventsQuery(*last, project)
	q.Set("follow", "true")
	req, err := c.newRequest(ctx, http.MethodGet, api.Prefix+"/events", q, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.http.Do(req)
	if err != nil {
		return false, fmt.Errorf("client: follow events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return false, decodeError(resp)
	}
	// Events written in one transaction share an ID (the revision), so
	// only IDs at or below the point this stream started from are repeats.
	from := *last
	dec := json.NewDecoder(resp.Body)
	for {
		var ev model.Event
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return true, nil
			}
			return true, fmt.Errorf("client: follow events: %w", err)
		}
		if ev.ID != 0 && ev.ID <= from {
			continue // repeated after a reconnect
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return true, ctx.Err()
		}
		if ev.ID > *last {
			*last = ev.ID
		}
	}
}

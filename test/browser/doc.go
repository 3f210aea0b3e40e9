// Package browser holds the dashboard's browser test: an in-process
// control plane on the in-memory store with simulated hosts, the dashboard
// (package web) served beside the API, and headless Chromium driven through
// the DevTools protocol (chromedp) to sign in, create, inspect and delete a
// VM. The package has no code of its own; it may import anything, and
// nothing imports it.
package browser

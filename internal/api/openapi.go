package api

import _ "embed"

// OpenAPI is the OpenAPI 3.1 document of the user API and the agent
// protocol (openapi.json beside this file). The server serves it at
// /api/v1/openapi.json; a server test regenerates it from the route
// tables and wire types (go test ./internal/server -run TestOpenAPI -update)
// and fails when routes, api.Routes and the document disagree.
//
//go:embed openapi.json
var OpenAPI []byte

// Package chart tests the Helm chart in charts/roomsync with the Helm v4 SDK: lint, render
// with every option and decode strictly, the values schema, and install, upgrade and
// uninstall on a real API server, where the chart's own pod spec runs the manager.
package chart

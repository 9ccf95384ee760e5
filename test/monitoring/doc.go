// Package monitoring reads roomsync's Prometheus rules and Grafana dashboard, kept as plain
// files in charts/roomsync/files so that promtool and Grafana read them as they are and the
// chart only wraps them. Its tests run promtool on the rules and check the dashboard; the
// controllers tests use it to check that every metric the two name is one the manager serves.
package monitoring

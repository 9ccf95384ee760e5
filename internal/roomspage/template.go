package roomspage

// pageTemplate is the rooms page. html/template escapes every value for where it lands (text,
// attribute, URL), so room IDs, error texts and peers' words cannot inject markup.
var pageTemplate = mustParse("rooms", `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>roomsync: rooms</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2733;background:#fbfcfd}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #d5dbe2;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px;font-family:ui-monospace,Menlo,Consolas,monospace}
.muted{color:#5b6775}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.ok{background:#dcf1e0;color:#1b6b2f}.bad{background:#fbe0e3;color:#9b0012}.unk{background:#e6e9ee;color:#3b4653}
table{border-collapse:collapse;margin:6px 0 10px}
td,th{border:1px solid #d5dbe2;padding:3px 8px;text-align:left;vertical-align:top;font-size:13px}
th{background:#eef2f6}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.picture{border:1px solid #d5dbe2;background:#fff;max-width:100%;overflow:auto;max-height:640px}
.picture img{display:block}
.err{color:#9b0012}
</style>
</head>
<body>
<h1>roomsync: rooms</h1>
<p class="muted">Every RoomSync's rooms as the store holds them, at {{.Generated}}. Gaps are events the
rooms' DAGs reference but the store lacks; each shows what every peer answered the last time it was
asked. <code>roomsync inspect --gaps</code> and <code>--dag</code> print the same from the store.</p>
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
{{if not .RoomSyncs}}<p>No RoomSync.</p>{{end}}
{{range .RoomSyncs}}
<h2>{{.Namespace}}/{{.Name}}
 {{if eq .Ready "True"}}<span class="pill ok">Ready</span>{{else if eq .Ready "False"}}<span class="pill bad">Not ready</span>{{else}}<span class="pill unk">Unknown</span>{{end}}</h2>
<p>{{.Summary.ConvergedRooms}} of {{.Summary.Rooms}} rooms converged · {{.Summary.Events}} events · {{.Summary.Gaps}} gaps ({{.Summary.Unfillable}} unfillable){{if .ReadyReason}} · <b>{{.ReadyReason}}</b>: {{.ReadyMessage}}{{end}}</p>
{{if .Peers}}<table><tr><th>peer</th><th>healthy</th><th>last error</th></tr>
{{range .Peers}}<tr><td class="mono">{{.ServerName}}</td><td>{{if .Healthy}}yes{{else}}<span class="err">no</span>{{end}}</td><td>{{.LastError}}</td></tr>
{{end}}</table>{{end}}
{{range .Rooms}}
<h3>{{.ID}} {{if .Converged}}<span class="pill ok">converged</span>{{else}}<span class="pill bad">not converged</span>{{end}}</h3>
<p>{{.Events}} events, depths {{.EarliestDepth}}–{{.LatestDepth}}, {{.ForwardExtremities}} heads, {{.Gaps}} gaps ({{.Unfillable}} unfillable){{if .Redacted}}, {{.Redacted}} redacted{{end}}{{if .Rejected}}, {{.Rejected}} rejected{{end}}{{if .Membership}} · {{.Membership}}{{end}}</p>
{{if .WaitingFor}}<p>Waiting for: {{range $i, $w := .WaitingFor}}{{if $i}}; {{end}}{{$w}}{{end}}</p>{{end}}
{{if .LastError}}<p class="err">Last error: {{.LastError}}</p>{{end}}
{{if .GapsError}}<p class="err">{{.GapsError}}</p>{{end}}
{{if .GapList}}<table><tr><th>gap</th><th>below depth</th><th>referenced by</th><th>attempts</th><th>last error</th><th>next retry</th><th>peers' answers</th></tr>
{{range .GapList}}<tr><td class="mono"><a href="{{.PictureURL}}">{{short .EventID 20}}</a></td><td>{{.BelowDepth}}</td>
<td class="mono">{{range .ReferencedBy}}{{short . 16}} {{end}}</td>
<td>{{.Attempts}}{{if .Unfillable}} · unfillable{{end}}</td><td>{{.LastError}}</td><td>{{.NextRetry}}</td>
<td>{{range .Peers}}<div><span class="mono">{{.Peer}}</span>{{if .Endpoint}} /{{.Endpoint}}{{end}}: <b>{{.Outcome}}</b> {{short .Error 160}}</div>{{end}}</td></tr>
{{end}}</table>{{if .MoreGaps}}<p class="muted">More gaps: <code>roomsync inspect --gaps</code> lists them all.</p>{{end}}{{end}}
<div class="picture"><img src="{{.PictureURL}}" alt="the newest part of the DAG of {{.ID}}"></div>
<p class="muted"><a href="{{.PictureURL}}">the picture on its own</a>; add <code>?around=EVENT_ID&amp;depth=N</code> for another part.</p>
{{end}}
{{if .MoreRooms}}<p class="muted">{{.MoreRooms}} more rooms not shown.</p>{{end}}
{{end}}
{{if .Truncated}}<p class="muted">More RoomSyncs than the page shows.</p>{{end}}
</body>
</html>
`)

//! The status page at `/`: one self-contained HTML document (no external assets) that polls
//! `/api/state` every two seconds and draws per-service state, a success/failure timeline by CA key
//! id and the latest events.

pub const HTML: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trustwatch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
header{background:#1d2430;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline}
header h1{font-size:18px;margin:0}
main{padding:14px 18px;display:grid;gap:14px}
.card{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:12px}
.st{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-weight:600}
.healthy,.recovered{background:#2e7d32}.degraded{background:#ef8f00}.collapsed{background:#c62828}
.bad{color:#c62828;font-weight:600}.ok{color:#2e7d32;font-weight:600}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eee;font-size:13px}
code{font-size:12px}.ev{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
</style></head><body>
<header><h1>trustwatch</h1><span id="ver"></span><span id="upd"></span><span id="cons"></span></header>
<main><div id="services"></div>
<div class="card"><h3>Latest events</h3><div id="events">none</div></div>
<div class="card"><h3>Probes</h3><div id="probes">none configured</div></div>
<div class="card"><h3>Capture</h3><div id="sources"></div></div></main>
<script>
const palette=["#1565c0","#6a1b9a","#00838f","#ef6c00","#558b2f","#ad1457","#4e342e","#37474f"];
const colors={};let nextColor=0;
function color(k){if(k==="unknown")return"#9e9e9e";if(!(k in colors))colors[k]=palette[nextColor++%palette.length];return colors[k];}
function esc(s){return String(s??"").replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));}
function short(k){return k?esc(k.slice(0,16)):"unknown";}
function timeline(buckets,width){
  if(!buckets||!buckets.length)return"<p>no handshakes yet</p>";
  const h=160,mid=h/2,n=buckets.length,bw=Math.max(2,Math.floor(width/Math.max(n,1))-1);
  let max=1;for(const b of buckets){let s=0,f=0;for(const c of Object.values(b.keys)){s+=c.successes;f+=c.cert_failures+c.other_failures;}max=Math.max(max,s,f);}
  let svg=`<svg width="${(bw+1)*n}" height="${h+16}" role="img" aria-label="timeline">`;
  svg+=`<line x1="0" x2="${(bw+1)*n}" y1="${mid}" y2="${mid}" stroke="#888"/>`;
  buckets.forEach((b,i)=>{let up=mid,down=mid;const x=i*(bw+1);
    for(const [k,c] of Object.entries(b.keys)){
      const s=c.successes/max*(mid-4),f=(c.cert_failures+c.other_failures)/max*(mid-4);
      if(s>0){up-=s;svg+=`<rect x="${x}" y="${up}" width="${bw}" height="${s}" fill="${color(k)}"><title>${esc(new Date(b.start*1000).toLocaleTimeString())} CA ${short(k)}: ${c.successes} ok</title></rect>`;}
      if(f>0){svg+=`<rect x="${x}" y="${down}" width="${bw}" height="${f}" fill="${color(k)}" opacity="0.55" stroke="#c62828"><title>${esc(new Date(b.start*1000).toLocaleTimeString())} CA ${short(k)}: ${c.cert_failures} cert failures, ${c.other_failures} other</title></rect>`;down+=f;}
    }});
  svg+=`<text x="2" y="12" font-size="11">successes ↑</text><text x="2" y="${h+12}" font-size="11">failures ↓ (outlined)</text></svg>`;
  return svg;
}
function render(s){
  document.getElementById("ver").textContent="v"+s.version+" since "+s.started;
  document.getElementById("upd").textContent="updated "+s.updated;
  document.getElementById("cons").innerHTML=s.ca_consistent?'<span class="ok">CA consistent</span>':'<span class="bad">CA INCONSISTENT / DIVERGING</span>';
  const d=s.detector||{services:[],recent_events:[]};
  let html="";
  const names=new Set([...d.services.map(x=>x.service),...Object.keys(s.timeline||{})]);
  for(const name of names){
    const svc=d.services.find(x=>x.service===name)||{state:"healthy",ca_keys:[],servers:[],failing_clients:0,succeeding_clients:0,divergent_ca_key_ids:[]};
    html+=`<div class="card"><h3>${esc(name)} <span class="st ${svc.state}">${esc(svc.state)}</span></h3>`;
    html+=`<p>failing clients ${svc.failing_clients} · succeeding ${svc.succeeding_clients}`+(svc.failing_clients?` · rejecting side <b>${esc(svc.rejecting_side)}</b>`:"")+` · last trusted CA key <code>${short(svc.last_good_ca_key_id)}</code>`;
    if(svc.divergent_ca_key_ids&&svc.divergent_ca_key_ids.length)html+=` · <span class="bad">replicas diverge: ${svc.divergent_ca_key_ids.map(short).join(", ")}</span>`;
    html+="</p>"+timeline((s.timeline||{})[name],900);
    const keys=new Set();for(const b of (s.timeline||{})[name]||[])for(const k of Object.keys(b.keys))keys.add(k);
    html+='<div class="legend">'+[...keys].map(k=>`<span><i style="background:${color(k)}"></i>CA ${short(k)}</span>`).join("")+"</div>";
    html+="<table><tr><th>server</th><th>presented CA key</th><th>source</th><th>ok</th><th>cert failures</th></tr>";
    for(const sv of svc.servers||[])html+=`<tr><td>${esc(sv.address)}</td><td><code>${short(sv.presented_ca_key_id)}</code></td><td>${esc(sv.presented_source||"")}</td><td>${sv.window.successes}</td><td>${sv.window.cert_failures}</td></tr>`;
    html+="</table></div>";
  }
  document.getElementById("services").innerHTML=html||'<div class="card">no watched traffic yet</div>';
  const ev=(d.recent_events||[]).slice(-20).reverse();
  document.getElementById("events").innerHTML=ev.length?ev.map(e=>`<div class="ev">${esc(e.message)}</div>`).join(""):"none";
  const pr=s.probes||[];
  if(pr.length)document.getElementById("probes").innerHTML="<table><tr><th>target</th><th>result</th></tr>"+pr.map(p=>`<tr><td>${esc(p.target.host)}:${p.target.port} (${esc(p.target.kind)})</td><td>${p.ok?("CA key <code>"+short((p.finding.ca&&p.finding.ca.key_id)||p.finding.issuer_key_id)+"</code>"):'<span class="bad">'+esc(p.error)+"</span>"}</td></tr>`).join("")+"</table>";
  document.getElementById("sources").innerHTML="<table><tr><th>source</th><th>running</th><th>packets</th><th>dropped (queue / kernel / interface)</th></tr>"+(s.sources||[]).map(x=>`<tr><td>${esc(x.name)}</td><td>${x.running?'<span class="ok">yes</span>':'<span class="bad">no</span>'}</td><td>${x.packets}</td><td>${x.dropped_queue_full} / ${x.dropped_kernel} / ${x.dropped_interface}</td></tr>`).join("")+`</table><p>handshakes ${s.handshakes} · flows ${s.flows_active}</p>`;
}
async function poll(){try{const r=await fetch("api/state");if(r.ok)render(await r.json());}catch(e){document.getElementById("upd").textContent="unreachable";}setTimeout(poll,2000);}
poll();
</script></body></html>
"##;

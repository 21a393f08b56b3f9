//! Self-contained HTML report: inline CSS and a few lines of inline JS, no
//! external assets, so the file can be attached to a CI run and opened
//! anywhere.
//!
//! For each failing key the page draws a timeline of the operations around
//! the violation (see `Violation::window`): one lane per process,
//! operations as bars from invoke to completion (info ops run to the right
//! edge), labelled with f/args/result; the longest linearizable prefix is
//! numbered in linearization order and the op that cannot be placed is
//! red. Every user-supplied string goes through [`esc`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::history::{show_value, Command, Operation, Outcome};
use crate::report::{fmt_duration, fmt_ns, KeyReport, KeyVerdict, Report, Verdict, Violation};

/// Most operations drawn per failing key; more would make an unreadable
/// (and huge) page.
const HTML_OPS_SHOWN: usize = 150;
const LEFT: f64 = 90.0;
const PLOT_W: f64 = 1000.0;
/// Room to the right of the plot where info ops trail off.
const INFO_TAIL: f64 = 40.0;
const ROW_H: f64 = 34.0;
const TOP: f64 = 30.0;
const LABEL_MAX: usize = 36;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 6px}
h2{font-size:18px;margin:28px 0 8px}
.bad{color:#b00020}.good{color:#137333}.unk{color:#9a6700}
.meta{color:#57606a;font-size:13px}
.explain{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;font-size:14px;line-height:1.5}
.legend{display:flex;flex-wrap:wrap;gap:16px;font-size:13px;margin:10px 0}
.legend span{display:inline-flex;align-items:center;gap:6px}
.sw{display:inline-block;width:26px;height:12px;border-radius:3px;border:1px solid #555}
.timeline{overflow-x:auto;border:1px solid #d0d7de;border-radius:6px;padding:6px}
svg text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11px}
.lane-label{font-weight:600;fill:#57606a}
.axis{stroke:#8c959f;stroke-width:1}
.tick{fill:#57606a;font-size:10px}
.op rect.bar{stroke-width:1.2}
.op.prefix rect.bar{fill:#cfe3ff;stroke:#0b57d0}
.op.pending rect.bar{fill:#e6e8eb;stroke:#6e7781}
.op.offending rect.bar{fill:#ff5c5c;stroke:#8b0000;stroke-width:2}
.op.offending text.label{fill:#b00020;font-weight:700}
.op.dropped rect.bar{fill:#fff;stroke:#8c959f;stroke-dasharray:3 2}
.op.dropped text.label{fill:#8c959f}
.op rect.info{fill:url(#infofade);stroke:none}
.badge rect{fill:#0b57d0}.badge text{fill:#fff;font-size:9px;font-weight:700}
.op.hl rect.bar{stroke:#000;stroke-width:2.5}
table{border-collapse:collapse;font-size:13px;margin-top:10px}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f6f8fa}
td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
tr.offending td{background:#ffe0e0}
tr.hl td{background:#fff3b0}
details{margin-top:28px}
"#;

const SCRIPT: &str = r#"
document.querySelectorAll('[data-op]').forEach(function(el){
  var id=el.getAttribute('data-op');
  function set(on){document.querySelectorAll('[data-op="'+id+'"]').forEach(function(x){x.classList.toggle('hl',on);});}
  el.addEventListener('mouseenter',function(){set(true);});
  el.addEventListener('mouseleave',function(){set(false);});
});
"#;

impl Report {
    /// A self-contained HTML page (inline CSS and a few lines of JS, no
    /// external assets). For each failing key: a timeline with one lane
    /// per process, operations as bars from invoke to completion (info ops
    /// run to the right edge) labelled with f/args/result, the prefix
    /// numbered in linearization order, the offending op in red, a legend
    /// and a table of the operations shown; then a table of all keys.
    /// Every user string is HTML-escaped.
    pub fn to_html(&self) -> String {
        render(self)
    }
}

/// Renders the whole report page.
fn render(report: &Report) -> String {
    let mut h = String::new();
    let (class, title) = match &report.verdict {
        Verdict::Linearizable => ("good", "LINEARIZABLE".to_string()),
        Verdict::NotLinearizable => ("bad", "NOT LINEARIZABLE".to_string()),
        Verdict::Unknown { .. } => ("unk", "UNKNOWN".to_string()),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>kvorum linearizability check: {title}</title><style>{STYLE}</style></head><body>\n\
         <h1>Linearizability check: <span class=\"{class}\">{title}</span></h1>\n\
         <p class=\"meta\">{} operations on {} keys, checked in {}.</p>\n",
        report.total_ops,
        report.keys.len(),
        esc(&fmt_duration(report.elapsed)),
    );
    if let Verdict::Unknown { reason } = &report.verdict {
        let _ = writeln!(h, "<p class=\"explain\">{}</p>", esc(reason));
    }
    for (k, v) in report.violations() {
        render_violation(&mut h, k, v);
    }
    render_key_table(&mut h, report);
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body></html>\n");
    h
}

fn render_key_table(h: &mut String, report: &Report) {
    let open = if report.keys.len() <= 20 { " open" } else { "" };
    let _ = write!(
        h,
        "<details{open}><summary>All keys ({})</summary>\n<table><tr><th>key</th><th>verdict</th>\
         <th>ops</th><th>checked</th><th>states</th><th>time</th></tr>\n",
        report.keys.len()
    );
    for k in &report.keys {
        let (class, text) = match &k.verdict {
            KeyVerdict::Linearizable => ("good", "linearizable".to_string()),
            KeyVerdict::NotLinearizable => ("bad", "NOT LINEARIZABLE".to_string()),
            KeyVerdict::Unknown { reason } => ("unk", format!("unknown: {reason}")),
            KeyVerdict::Skipped => ("unk", "skipped".to_string()),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"mono\">{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(&format!("{:?}", k.key)),
            esc(&text),
            k.ops,
            k.checked_ops,
            k.states,
            esc(&fmt_duration(k.elapsed))
        );
    }
    h.push_str("</table></details>\n");
}

/// How an op is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Prefix(usize),
    Offending,
    Pending,
    /// Ignored by the search (failed non-cas op, info get).
    Dropped,
}

fn role(o: &Operation, positions: &HashMap<usize, usize>, offending: usize) -> Role {
    if o.id == offending {
        Role::Offending
    } else if let Some(&p) = positions.get(&o.id) {
        Role::Prefix(p)
    } else if matches!(
        (&o.command, o.outcome),
        (Command::Get, Outcome::Fail | Outcome::Info)
    ) || (o.outcome == Outcome::Fail && !matches!(o.command, Command::Cas { .. }))
    {
        Role::Dropped
    } else {
        Role::Pending
    }
}

fn render_violation(h: &mut String, k: &KeyReport, v: &Violation) {
    let positions = v.positions();
    let window = v.window(HTML_OPS_SHOWN);
    let _ = writeln!(
        h,
        "<h2>Key <code>{}</code> is <span class=\"bad\">not linearizable</span></h2>",
        esc(&format!("{:?}", k.key))
    );
    h.push_str("<div class=\"explain\">");
    let _ = write!(
        h,
        "The longest linearizable prefix found has <b>{}</b> of the key's {} checked operations \
         (numbered below in linearization order). After it the key holds <code>{}</code>.",
        v.prefix.len(),
        k.checked_ops,
        esc(&show_value(&v.value_after_prefix))
    );
    if let Some(off) = v.op(v.offending) {
        let _ = write!(
            h,
            "<br>Operation <b>#{}</b> (process {}, <code>{}</code>, {} → {}) cannot be placed \
             after it: {}.",
            off.id,
            off.process,
            esc(&off.label()),
            esc(&fmt_ns(off.invoke_time)),
            esc(&off.complete_time.map_or("never".to_string(), fmt_ns)),
            esc(v.cause.explain()),
        );
    }
    let _ = writeln!(
        h,
        "<br><span class=\"meta\">Showing {} of {} operations on this key (those around the \
         violation). Hover a bar for details.</span></div>",
        window.len(),
        v.operations.len()
    );
    h.push_str(
        "<div class=\"legend\">\
         <span><i class=\"sw\" style=\"background:#cfe3ff;border-color:#0b57d0\"></i>in the longest linearizable prefix (number = position in the linearization)</span>\
         <span><i class=\"sw\" style=\"background:#ff5c5c;border-color:#8b0000\"></i>cannot be linearized</span>\
         <span><i class=\"sw\" style=\"background:#e6e8eb;border-color:#6e7781\"></i>not yet linearized</span>\
         <span><i class=\"sw\" style=\"background:linear-gradient(90deg,#f0a020,#fff)\"></i>info: outcome unknown, may take effect any time after invoke (or never)</span>\
         <span><i class=\"sw\" style=\"background:#fff;border-style:dashed\"></i>failed / unknown read: ignored</span>\
         </div>\n",
    );
    render_timeline(h, &window, &positions, v.offending);
    render_op_table(h, &window, &positions, v.offending);
}

struct Bar<'a> {
    op: &'a Operation,
    x0: f64,
    x1: f64,
    /// Extends to the right edge (no ok/fail completion).
    open_ended: bool,
    role: Role,
    label: String,
    row: usize,
}

/// The window's time range and its mapping to x coordinates.
struct Scale {
    t0: u64,
    t1: u64,
    span: f64,
}

impl Scale {
    fn new(window: &[&Operation]) -> Self {
        let t0 = window.iter().map(|o| o.invoke_time).min().unwrap_or(0);
        let t1 = window
            .iter()
            .flat_map(|o| [Some(o.invoke_time), o.complete_time])
            .flatten()
            .max()
            .unwrap_or(t0)
            .max(t0.saturating_add(1));
        let span = ((t1 - t0) as f64).max(1.0);
        Scale { t0, t1, span }
    }

    fn x(&self, t: u64) -> f64 {
        LEFT + (t.saturating_sub(self.t0) as f64 / self.span) * PLOT_W
    }
}

/// Right end of open-ended (info) bars.
const RIGHT_EDGE: f64 = LEFT + PLOT_W + INFO_TAIL;

/// One bar per operation, grouped by process.
fn bars_by_process<'a>(
    window: &[&'a Operation],
    positions: &HashMap<usize, usize>,
    offending: usize,
    scale: &Scale,
) -> BTreeMap<u64, Vec<Bar<'a>>> {
    let mut lanes: BTreeMap<u64, Vec<Bar<'_>>> = BTreeMap::new();
    for &o in window {
        let role = role(o, positions, offending);
        let open_ended = o.outcome == Outcome::Info;
        let x0 = scale.x(o.invoke_time);
        let x1 = if open_ended {
            RIGHT_EDGE
        } else {
            scale.x(o.complete_time.unwrap_or(scale.t1)).max(x0 + 4.0)
        };
        let label = truncate(&o.label(), LABEL_MAX);
        lanes.entry(o.process).or_default().push(Bar {
            op: o,
            x0,
            x1,
            open_ended,
            role,
            label,
            row: 0,
        });
    }
    lanes
}

/// Packs each lane's bars into sub-rows (sets `Bar::row`); returns each
/// process with its number of rows.
fn pack_rows(lanes: &mut BTreeMap<u64, Vec<Bar<'_>>>) -> Vec<(u64, usize)> {
    let mut lane_rows: Vec<(u64, usize)> = Vec::new();
    for (&p, bars) in lanes.iter_mut() {
        bars.sort_by(|a, b| a.x0.total_cmp(&b.x0));
        let mut row_end: Vec<f64> = Vec::new();
        for b in bars.iter_mut() {
            let badge = if matches!(b.role, Role::Prefix(_)) {
                40.0
            } else {
                0.0
            };
            let extent =
                b.x1.max(b.x0 + badge + 6.6 * b.label.chars().count() as f64) + 6.0;
            let row = row_end.iter().position(|&end| end <= b.x0);
            let row = match row {
                Some(r) => r,
                None => {
                    row_end.push(0.0);
                    row_end.len() - 1
                }
            };
            if let Some(end) = row_end.get_mut(row) {
                *end = extent;
            }
            b.row = row;
        }
        lane_rows.push((p, row_end.len().max(1)));
    }
    lane_rows
}

/// Opens the SVG element and draws the time axis.
fn draw_axis(h: &mut String, scale: &Scale, width: f64, height: f64) {
    let (t0, t1) = (scale.t0, scale.t1);
    let _ = writeln!(
        h,
        "<div class=\"timeline\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" \
         height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\">\
         <defs><linearGradient id=\"infofade\"><stop offset=\"0\" stop-color=\"#f0a020\"/>\
         <stop offset=\"1\" stop-color=\"#f0a020\" stop-opacity=\"0.05\"/></linearGradient></defs>"
    );
    // Time axis with relative tick labels.
    let _ = writeln!(
        h,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\"/>",
        y = TOP - 8.0,
        x2 = LEFT + PLOT_W
    );
    for i in 0..=4u64 {
        let t = t0 + (t1 - t0) / 4 * i;
        let _ = writeln!(
            h,
            "<line class=\"axis\" x1=\"{xx:.1}\" y1=\"{a:.1}\" x2=\"{xx:.1}\" y2=\"{b:.1}\"/>\
             <text class=\"tick\" x=\"{xx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">+{}</text>",
            esc(&fmt_ns(t - t0)),
            xx = scale.x(t),
            a = TOP - 12.0,
            b = TOP - 4.0,
            ty = TOP - 16.0,
        );
    }
}

fn render_timeline(
    h: &mut String,
    window: &[&Operation],
    positions: &HashMap<usize, usize>,
    offending: usize,
) {
    let scale = Scale::new(window);

    // Group by process; inside a lane, pack bars into sub-rows so that
    // neither bars nor their labels overlap (info ops run to the edge and
    // would otherwise cover the process's later ops).
    let mut lanes = bars_by_process(window, positions, offending, &scale);
    let lane_rows = pack_rows(&mut lanes);
    let total_rows: usize = lane_rows.iter().map(|&(_, r)| r).sum();
    let height = TOP + total_rows as f64 * ROW_H + 20.0;
    let width = RIGHT_EDGE + 20.0;

    draw_axis(h, &scale, width, height);

    let mut y = TOP;
    for (p, rows) in &lane_rows {
        let Some(bars) = lanes.get(p) else { continue };
        let lane_h = *rows as f64 * ROW_H;
        let _ = writeln!(
            h,
            "<line x1=\"0\" y1=\"{y:.1}\" x2=\"{width:.0}\" y2=\"{y:.1}\" stroke=\"#eaeef2\"/>\
             <text class=\"lane-label\" x=\"8\" y=\"{ly:.1}\">process {p}</text>",
            ly = y + lane_h / 2.0 + 4.0
        );
        for b in bars {
            draw_bar(h, b, y + b.row as f64 * ROW_H);
        }
        y += lane_h;
    }
    h.push_str("</svg></div>\n");
}

fn draw_bar(h: &mut String, b: &Bar<'_>, row_y: f64) {
    let class = match b.role {
        Role::Prefix(_) => "prefix",
        Role::Offending => "offending",
        Role::Pending => "pending",
        Role::Dropped => "dropped",
    };
    let o = b.op;
    let tip = format!(
        "#{} process {}: {}\ninvoke {} ns, {}",
        o.id,
        o.process,
        o.label(),
        o.invoke_time,
        match (o.outcome, o.complete_time) {
            (Outcome::Info, Some(t)) => format!("info at {t} ns (may take effect later)"),
            (_, Some(t)) => format!("{} at {t} ns", o.outcome.as_str()),
            (_, None) => "never completed".to_string(),
        }
    );
    let bar_y = row_y + 16.0;
    let _ = write!(
        h,
        "<g class=\"op {class}\" data-op=\"{}\"><title>{}</title>",
        o.id,
        esc(&tip)
    );
    let w = (b.x1 - b.x0).max(2.0);
    if b.open_ended {
        // Solid up to the info completion (if any), then fading out.
        let _ = write!(
            h,
            "<rect class=\"info\" x=\"{:.1}\" y=\"{bar_y:.1}\" width=\"{w:.1}\" height=\"12\" rx=\"3\"/>\
             <rect class=\"bar\" x=\"{:.1}\" y=\"{bar_y:.1}\" width=\"{w:.1}\" height=\"12\" rx=\"3\" \
             fill-opacity=\"0\" stroke-dasharray=\"6 3\"/>",
            b.x0, b.x0
        );
    } else {
        let _ = write!(
            h,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{bar_y:.1}\" width=\"{w:.1}\" height=\"12\" rx=\"3\"/>",
            b.x0
        );
    }
    let mut label_x = b.x0;
    if let Role::Prefix(n) = b.role {
        let text = n.to_string();
        let bw = 8.0 + 6.0 * text.len() as f64;
        let _ = write!(
            h,
            "<g class=\"badge\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"12\" rx=\"6\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{text}</text></g>",
            b.x0,
            row_y + 2.0,
            b.x0 + bw / 2.0,
            row_y + 11.0
        );
        label_x += bw + 4.0;
    }
    let _ = writeln!(
        h,
        "<text class=\"label\" x=\"{label_x:.1}\" y=\"{:.1}\">{}</text></g>",
        row_y + 12.0,
        esc(&b.label)
    );
}

fn render_op_table(
    h: &mut String,
    window: &[&Operation],
    positions: &HashMap<usize, usize>,
    offending: usize,
) {
    h.push_str(
        "<table><tr><th>op</th><th>process</th><th>operation</th><th>outcome</th>\
         <th>invoke (ns)</th><th>complete (ns)</th><th>linearized</th></tr>\n",
    );
    for &o in window {
        let r = role(o, positions, offending);
        let lin = match r {
            Role::Prefix(n) => n.to_string(),
            Role::Offending => "cannot be placed".to_string(),
            Role::Dropped => "ignored".to_string(),
            Role::Pending => String::new(),
        };
        let class = if r == Role::Offending {
            " class=\"offending\""
        } else {
            ""
        };
        let _ = writeln!(
            h,
            "<tr{class} data-op=\"{}\"><td>#{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            o.id,
            o.id,
            o.process,
            esc(&o.label()),
            o.outcome.as_str(),
            o.invoke_time,
            o.complete_time.map_or("—".to_string(), |t| t.to_string()),
            esc(&lin)
        );
    }
    h.push_str("</table>\n");
}

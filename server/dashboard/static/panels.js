// Each panel drawn from what the stream (or the API) says. Text goes in as text, never as
// HTML: items, locations and details come from the floor.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && !key.startsWith("data")) node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

export function number(value, digits = 0) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en", { maximumFractionDigits: digits });
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  const s = Math.max(0, value);
  if (s < 1) return `${s.toFixed(2)} s`;
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

// "3 s ago" from an ISO time; refreshed every second by app.js (data-at keeps the time)
export function ago(iso) {
  const span = h("span", { class: "ago", "data-at": iso || "" });
  span.textContent = agoText(iso);
  return span;
}

export function agoText(iso) {
  if (!iso) return "never";
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return iso;
  return `${seconds((Date.now() - at) / 1000)} ago`;
}

function clock(iso) {
  const at = new Date(iso);
  return Number.isNaN(at.valueOf()) ? iso : at.toLocaleTimeString("en-GB");
}

function fill(body, rows, columns, empty) {
  body.replaceChildren(...(rows.length ? rows : [
    h("tr", { class: "empty" }, h("td", { colSpan: columns }, empty))]));
}

export function devices(list) {
  $("devices-count").textContent = `${list.filter((d) => d.online).length} of ${list.length} online`;
  fill($("devices"), list.map((d) => h("tr", {
    "data-device": `${d.site}/${d.device}`, "data-online": String(d.online),
  },
  h("td", {}, d.device, h("div", { class: "count" }, d.site)),
  h("td", {}, h("span", { class: `dot ${d.online ? "on" : "off"}` },
    d.online ? "● online" : "● offline")),
  h("td", {}, ago(d.last_seen)),
  h("td", { class: "num" }, number(d.backlog)),
  h("td", { class: "num" }, d.backlog ? seconds(d.oldest_unsynced_s) : "–"),
  h("td", { class: "num" }, number(d.events)))), 6, "no device has reported yet");
}

export function passes(frame, feed) {
  const rows = frame.items.map((p) => {
    const inbound = p.type !== "ship";
    return h("li", { "data-event": p.event_id, class: frame.replace ? "" : "new" },
      h("span", {}, clock(p.event_time)),
      h("span", { class: `dir ${inbound ? "in" : "out"}` },
        inbound ? `in → ${p.location}` : `out ← ${p.location}`),
      h("span", {}, p.item, h("div", { class: "meta" }, p.epc || p.tag || "")),
      h("span", { class: "meta" }, `${p.device} · ${p.reads ?? "?"} reads · `
        + `${p.rssi ?? "?"} dBm`, h("div", {}, `lag ${seconds(p.lag_s)}`)));
  }).reverse();
  if (frame.replace) feed.replaceChildren(...rows);
  else feed.prepend(...rows);
  while (feed.children.length > 30) feed.lastChild.remove();
  if (!feed.children.length) feed.append(h("li", { class: "meta" }, "no door pass yet"));
  else feed.querySelectorAll("li.meta:not([data-event])").forEach((n) => n.remove());
}

export function exceptions(frame, onResolve) {
  $("exceptions-count").textContent = `${number(frame.open)}${frame.more_than ? "+" : ""} open`;
  fill($("exceptions"), frame.items.map((x) => h("tr", { "data-exception": String(x.id) },
    h("td", {}, String(x.id)),
    h("td", {}, x.kind.replaceAll("_", " "), x.occurrences > 1 ? ` ×${x.occurrences}` : ""),
    h("td", {}, x.item ?? "–", x.lot ? h("div", { class: "count" }, `lot ${x.lot}`) : null),
    h("td", {}, x.location ?? "–"),
    h("td", { class: `num ${x.quantity < 0 ? "neg" : ""}` }, number(x.quantity, 3)),
    h("td", {}, x.detail),
    h("td", {}, ago(x.raised_at)),
    h("td", {}, h("button", { type: "button", onclick: () => onResolve(x) }, "Resolve")))),
  8, "no open exception");
  const more = $("exceptions-more");
  more.hidden = !frame.next_cursor;
  more.textContent = frame.next_cursor
    ? `The oldest ${frame.items.length} shown; GET /api/v1/exceptions?status=open pages on.` : "";
}

export function resolveForm(exception, by, onSubmit, onCancel) {
  const form = h("form", { class: "resolve" },
    h("select", { name: "action", "aria-label": "action" },
      h("option", { value: "adjust" }, "adjust (post the remedy)"),
      h("option", { value: "dismiss" }, "dismiss")),
    h("input", { name: "by", placeholder: "your name", required: true, value: by,
      "aria-label": "resolved by" }),
    h("input", { name: "reason", placeholder: "reason (needed to dismiss)",
      "aria-label": "reason" }),
    h("button", { type: "submit" }, `Resolve #${exception.id}`),
    h("button", { type: "button", onclick: onCancel }, "Cancel"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    onSubmit({ action: data.get("action"), by: data.get("by"),
      reason: data.get("reason") || null });
  });
  return h("tr", { class: "resolving", "data-resolve": String(exception.id) },
    h("td", { colSpan: 8 }, form));
}

export function stock(page, offset) {
  fill($("stock"), page.items.map((s) => h("tr", {},
    h("td", {}, s.item), h("td", {}, s.sku ?? "–"), h("td", {}, s.site),
    h("td", {}, s.location), h("td", {}, s.lot ?? "–"),
    h("td", { class: `num ${s.quantity < 0 ? "neg" : ""}` }, number(s.quantity, 3)))),
  6, "no stock line matches");
  $("stock-range").textContent = page.items.length
    ? `lines ${number(offset + 1)}–${number(offset + page.items.length)}` : "";
}

export function counts(list) {
  const waiting = list.filter((c) => c.status === "open" || c.status === "needs_decision");
  $("counts-count").textContent = waiting.length ? `${waiting.length} waiting` : "";
  fill($("counts"), list.map((c) => h("tr", { "data-count": String(c.id) },
    h("td", {}, String(c.id)), h("td", {}, c.location, h("div", { class: "count" }, c.site)),
    h("td", {}, c.status.replaceAll("_", " ")),
    h("td", { class: "num" }, `${number(c.lines_counted)} / ${number(c.lines_total)}`),
    h("td", {}, c.differences_total ? [
      `${c.differences_total} differ: `,
      c.differences.map((d) => `${d.item}${d.lot ? ` (${d.lot})` : ""} `
        + `${d.difference > 0 ? "+" : ""}${number(d.difference, 3)}`).join(", "),
    ] : c.status === "open" ? "counting" : "none"))), 5, "no count yet");
}

export function receipts(list) {
  $("receipts-count").textContent = list.length ? String(list.length) : "";
  fill($("receipts"), list.map((r) => h("tr", {},
    h("td", {}, r.id, h("div", { class: "count" }, r.site)), h("td", {}, r.supplier),
    h("td", {}, r.expected_date), h("td", {}, r.location ?? "any door"),
    h("td", { class: "num" }, number(r.expected_qty)))), 5, "no open receipt");
}

export function orders(list) {
  $("orders-count").textContent = list.length ? String(list.length) : "";
  fill($("orders"), list.map((o) => h("tr", {},
    h("td", {}, o.id, h("div", { class: "count" }, o.site)), h("td", {}, o.due),
    h("td", { class: "num" }, String(o.priority)), h("td", { class: "num" }, number(o.ordered)),
    h("td", { class: "num" }, number(o.picked)), h("td", { class: "num" }, number(o.shipped)),
    h("td", { class: `num ${o.backordered ? "neg" : ""}` }, number(o.backordered)))),
  7, "no open order");
}

export function backorders(list) {
  $("backorders-count").textContent = list.length ? String(list.length) : "";
  fill($("backorders"), list.map((b) => h("tr", {},
    h("td", {}, `${b.order_id}/${b.line}`), h("td", {}, b.sku),
    h("td", { class: "num" }, number(b.open_qty, 3)), h("td", {}, ago(b.since)),
    h("td", {}, b.why))), 5, "no backorder");
}

export function backlog(b) {
  const oldest = (f) => (f.count ? ` · oldest ${seconds(f.oldest_s)}` : "");
  const figures = [
    ["open receipts", `${number(b.receipts.count)}${oldest(b.receipts)}`],
    ["received, not put away", `${number(b.not_put_away.count)} lines${oldest(b.not_put_away)}`],
    ["order lines not done", `${number(b.order_lines.count)}${oldest(b.order_lines)}`],
    ["open exceptions", `${number(b.exceptions.count)}${oldest(b.exceptions)}`],
    ["events held on edges", `${number(b.devices.events)} on ${b.devices.count} devices`],
  ];
  $("backlog").replaceChildren(...figures.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function lag(l) {
  const parts = [`sync lag ${seconds(l.p50_s)} (max ${seconds(l.max_s)})`];
  if (l.backlog) parts.push(`edges hold ${number(l.backlog)} · oldest ${seconds(l.oldest_unsynced_s)}`);
  if (l.ledger_rows_per_s) parts.push(`${number(l.ledger_rows_per_s)} rows/s`);
  $("lag").textContent = parts.join(" · ");
}

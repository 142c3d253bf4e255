// The dashboard: log in, follow the live stream, search stock, resolve exceptions.

import { API, ApiError, getJSON, postJSON } from "./api.js";
import { follow } from "./live.js";
import * as panels from "./panels.js";

const $ = (id) => document.getElementById(id);
const LOGIN_CHANNEL = "floorsync-session";
const STOCK_PAGE = 50;

let session = null;
let live = null;
let resolving = null;  // the exception whose form is open (kept across stream updates)
let lastExceptions = null;
const sessions = new BroadcastChannel(LOGIN_CHANNEL);

function notice(text, error = false) {
  const box = $("notice");
  box.textContent = text;
  box.className = error ? "error" : "";
  box.hidden = !text;
}

function scopeText(s) {
  if (!s.auth) return "open access (FLOORSYNC_AUTH=off)";
  const top = s.scopes.includes("admin") ? "admin" : s.scopes.includes("write") ? "write" : "read";
  return `${s.name} (${top === "read" ? "read only" : top})`;
}

function showLogin(message = "") {
  if (live) { live.stop(); live = null; }
  session = null;
  $("board").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("link").dataset.state = "closed";
  $("link").textContent = "not logged in";
  $("token").focus();
}

async function checkSession() {
  try {
    return await getJSON("/dashboard/session");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

function start(s) {
  session = s;
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = !s.auth;
  $("who").textContent = scopeText(s);
  live = follow({
    onFrame: draw,
    onState: (state) => {
      $("link").dataset.state = state;
      $("link").textContent = { live: "live", reconnecting: "reconnecting…",
        connecting: "connecting…", closed: "disconnected" }[state] || state;
      $("board").classList.toggle("stale", state !== "live");
    },
    onDenied: async () => {
      const again = await checkSession().catch(() => undefined);
      if (again === null) { showLogin("Your session ended: log in again."); return true; }
      return false;
    },
  });
  searchStock();
}

function draw(event, data) {
  switch (event) {
    case "devices": panels.devices(data); break;
    case "passes": panels.passes(data, $("passes")); break;
    case "exceptions": lastExceptions = data; drawExceptions(); break;
    case "lag": panels.lag(data); ledgerMoved(data.last_movement); break;
    case "receipts": panels.receipts(data); break;
    case "orders": panels.orders(data); break;
    case "backorders": panels.backorders(data); break;
    case "counts": panels.counts(data); break;
    case "backlog": panels.backlog(data); break;
    default: break;
  }
}

// --- exceptions --------------------------------------------------------------------------

function drawExceptions() {
  if (!lastExceptions) return;
  panels.exceptions(lastExceptions, openResolve);
  if (!resolving) return;
  const row = document.querySelector(`tr[data-exception="${resolving.id}"]`);
  if (row) row.after(resolving.form);
  else resolving = null;  // resolved elsewhere meanwhile
}

function openResolve(exception) {
  const by = localStorage.getItem("floorsync.by") || "";
  const form = panels.resolveForm(exception, by,
    (body) => submitResolve(exception, body), () => { resolving = null; drawExceptions(); });
  resolving = { id: exception.id, form };
  drawExceptions();
  form.querySelector("input[name=by]").focus();
}

async function submitResolve(exception, body) {
  localStorage.setItem("floorsync.by", body.by);
  try {
    const done = await postJSON(`${API}/exceptions/${exception.id}/resolve`, body);
    resolving = null;
    if (lastExceptions) {
      lastExceptions = { ...lastExceptions, open: Math.max(0, lastExceptions.open - 1),
        items: lastExceptions.items.filter((x) => x.id !== exception.id) };
    }
    drawExceptions();
    notice(`Exception #${exception.id} ${done.status} by ${done.resolved_by}.`);
  } catch (error) {
    if (error.status === 403) {
      notice(`Refused: the token "${session?.name}" may only read. Resolving an exception `
        + "needs a write token: log out and log in with one.", true);
    } else if (error.status === 401) {
      showLogin("Your session ended: log in again.");
    } else if (error.status === 409) {
      notice(`#${exception.id} is no longer open: ${error.message}`, true);
    } else {
      notice(`Could not resolve #${exception.id}: ${error.message}`, true);
    }
  }
}

// --- stock: searched and paged by the server ----------------------------------------------

const stockPages = { cursors: [null], at: 0, query: {} };
const STOCK_REFRESH_MS = 5000;  // at most this often while the ledger moves, visible tabs only
let stockMark = null;
let stockTimer = null;

// direction: 0 a new search (page 1), -1 / +1 the page before or after, null the same page
async function searchStock(direction = 0) {
  if (direction === 0) {
    stockPages.query = { item: $("stock-item").value.trim(),
      location: $("stock-location").value.trim(), site: $("stock-site").value.trim() };
    stockPages.cursors = [null];
    stockPages.at = 0;
  } else if (direction !== null) {
    stockPages.at += direction;
  }
  const cursor = stockPages.cursors[stockPages.at];
  try {
    const page = await getJSON(`${API}/stock`, { ...stockPages.query, cursor, limit: STOCK_PAGE });
    stockPages.cursors[stockPages.at + 1] = page.next_cursor;
    panels.stock(page, stockPages.at * STOCK_PAGE);
    $("stock-prev").disabled = stockPages.at === 0;
    $("stock-next").disabled = !page.next_cursor;
  } catch (error) {
    if (error.status === 401) showLogin("Your session ended: log in again.");
    else notice(`Stock search failed: ${error.message}`, true);
  }
}

// the ledger moved (the stream's last ledger row): read the page shown again, now and then
function ledgerMoved(mark) {
  if (mark === undefined || mark === null || mark === stockMark) return;
  const first = stockMark === null;
  stockMark = mark;
  if (first || stockTimer || document.visibilityState !== "visible") return;
  stockTimer = setTimeout(() => { stockTimer = null; searchStock(null); }, STOCK_REFRESH_MS);
}

// --- wiring ------------------------------------------------------------------------------

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  try {
    const s = await postJSON("/dashboard/login", { token });
    $("token").value = "";
    sessions.postMessage("login");
    notice("");
    start(s);
  } catch (error) {
    $("login-error").textContent = error.status === 401
      ? "The server does not know this token." : `Log-in failed: ${error.message}`;
  }
});

$("logout").addEventListener("click", async () => {
  await postJSON("/dashboard/logout", {}).catch(() => null);
  sessions.postMessage("logout");
  showLogin();
});

sessions.onmessage = async ({ data }) => {
  if (data === "logout") showLogin();
  else if (data === "login" && !session) {
    const s = await checkSession();
    if (s) start(s);
  }
};

$("stock-form").addEventListener("submit", (event) => { event.preventDefault(); searchStock(); });
$("stock-prev").addEventListener("click", () => searchStock(-1));
$("stock-next").addEventListener("click", () => searchStock(1));

setInterval(() => {
  for (const span of document.querySelectorAll(".ago")) {
    span.textContent = panels.agoText(span.dataset.at);
  }
}, 1000);

checkSession().then((s) => (s ? start(s) : showLogin()),
  (error) => notice(`The service does not answer: ${error.message}`, true));

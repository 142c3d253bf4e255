// One live stream per browser, shared by its tabs.
//
// A browser opens at most six HTTP/1.1 connections to one server: fifty tabs each holding an
// EventSource would starve each other (and every fetch) of connections. So the tabs elect a
// leader with a Web Lock (released when its tab closes, then the next tab in line takes it):
// the leader alone holds the EventSource and repeats each event to the other tabs over a
// BroadcastChannel; a tab that opens asks the leader for the latest state of every panel.

const NAME = "floorsync-live";
const EVENTS = ["devices", "passes", "exceptions", "lag", "receipts", "orders", "backorders",
  "counts", "backlog"];
const PASSES_KEPT = 30;

export function follow({ onFrame, onState, onDenied }) {
  const channel = new BroadcastChannel(NAME);
  const latest = new Map();
  let state = "connecting";
  let source = null;
  let release = null;
  let retry = null;
  let stopped = false;

  const setState = (next) => {
    state = next;
    onState(next);
    if (release) channel.postMessage({ type: "state", state: next });
  };

  const remember = (event, data) => {
    if (event === "passes" && !data.replace) {
      const kept = [...(latest.get("passes")?.items || []), ...data.items].slice(-PASSES_KEPT);
      latest.set("passes", { items: kept, replace: true });
    } else {
      latest.set(event, data);
    }
  };

  channel.onmessage = ({ data: message }) => {
    if (message.type === "frame") {
      remember(message.event, message.data);
      onFrame(message.event, message.data);
    } else if (message.type === "state") {
      onState(message.state);
      if (message.state === "closed") onDenied();
    } else if (message.type === "hello" && release) {
      for (const [event, data] of latest) channel.postMessage({ type: "frame", event, data });
      channel.postMessage({ type: "state", state });
    }
  };

  const open = () => {
    source = new EventSource("/dashboard/stream");
    source.onopen = () => setState("live");
    source.onerror = async () => {
      if (source.readyState !== EventSource.CLOSED) { setState("reconnecting"); return; }
      // refused (401, 503): the browser gives up; ask whether the session is still good
      setState("closed");
      source = null;
      if (await onDenied()) return;
      retry = setTimeout(() => { if (!stopped) open(); }, 5000);
    };
    for (const event of EVENTS) {
      source.addEventListener(event, ({ data }) => {
        const parsed = JSON.parse(data);
        remember(event, parsed);
        onFrame(event, parsed);
        channel.postMessage({ type: "frame", event, data: parsed });
      });
    }
  };

  const lead = () => new Promise((resolve) => {
    release = resolve;
    if (stopped) { resolve(); return; }
    open();
  });

  if (navigator.locks) {
    navigator.locks.request(NAME, lead);
    channel.postMessage({ type: "hello" });
  } else {
    lead();  // no Web Locks: a stream of its own
  }

  return {
    // logging out: end the stream and step down, so another tab may lead after a log-in
    stop() {
      stopped = true;
      clearTimeout(retry);
      if (source) source.close();
      if (release) release();
      channel.close();
    },
  };
}

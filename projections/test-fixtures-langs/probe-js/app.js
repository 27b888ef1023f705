// `probe-js`: on every event, try to reach outside the sandbox and record what happened.
// QuickJS has no node APIs: file, environment and socket APIs are looked up on the global
// object and recorded "absent" when missing. Each attempt runs inside try/catch; the
// table `probes(name, outcome)` holds one row per attempt: "denied: <error class>",
// "absent", "empty" or the value observed. Used by host/tests/sandbox_langs.rs. The
// attempts in `TRAPPING` reach a WASI stub that traps (no exception to catch: the whole
// batch fails), so they run only for an `Escape` event naming one of them
// (`{"attempt": "performance_now"}`), still inside try/catch.

import { Kind, Projection, Table } from "./projector-sdk.js";

const projection = new Projection("probe-js", 1, { eventTypes: [] });
projection.table(
  new Table("probes").column("name", Kind.TEXT).column("outcome", Kind.TEXT).primaryKey("name"),
);

const g = globalThis;

/** The first global among `names` that exists, or null. */
function find(...names) {
  for (const n of names) if (typeof g[n] !== "undefined") return g[n];
  return null;
}

let firstRandom = null;

const ATTEMPTS = {
  read_file() {
    const std = find("std");
    if (std && typeof std.loadFile === "function") return `read ${String(std.loadFile("/etc/passwd")).length} chars`;
    if (find("require")) return `read ${g.require("fs").readFileSync("/etc/passwd", "utf8").length} chars`;
    return "absent";
  },
  list_dir() {
    const os = find("os");
    if (os && typeof os.readdir === "function") {
      const [names] = os.readdir("/");
      return names && names.length ? `listed: ${names.sort().join(",")}` : "empty";
    }
    if (find("require")) return `listed: ${g.require("fs").readdirSync("/").join(",")}`;
    return "absent";
  },
  write_file() {
    const std = find("std");
    if (std && typeof std.open === "function") {
      const f = std.open("/tmp/x", "w");
      if (!f) return "denied: null";
      f.puts("x");
      f.close();
      return "written";
    }
    if (find("require")) {
      g.require("fs").writeFileSync("/tmp/x", "x");
      return "written";
    }
    return "absent";
  },
  env() {
    const std = find("std");
    if (std && typeof std.getenviron === "function") {
      const names = Object.keys(std.getenviron());
      return names.length ? `vars: ${names.sort().join(",")}` : "empty";
    }
    const process = find("process");
    if (process && process.env) {
      const names = Object.keys(process.env);
      return names.length ? `vars: ${names.sort().join(",")}` : "empty";
    }
    return "absent";
  },
  socket() {
    const net = find("fetch", "WebSocket", "XMLHttpRequest", "Deno", "Bun");
    if (net) return `present: ${typeof net}`;
    return "absent";
  },
  clock() {
    return String(Date.now());
  },
  new_date() {
    return new Date().toISOString();
  },
  date_call() {
    // Date called as a function reads the clock too.
    return String(Date());
  },
  performance_time_origin() {
    const perf = find("performance");
    return perf ? String(perf.timeOrigin) : "absent";
  },
  random() {
    // The first number drawn by this instance (a fresh one per batch): the same whatever
    // the batch size, as long as the seed is fixed when the component is built.
    if (firstRandom === null) firstRandom = Math.random();
    return String(firstRandom);
  },
  globals() {
    return ["std", "os", "require", "process", "fetch", "WebSocket", "XMLHttpRequest", "performance"]
      .map((n) => `${n}=${typeof g[n]}`)
      .join(",");
  },
};

const TRAPPING = {
  performance_now() {
    return String(performance.now());
  },
  // The SDK replaces Date with a subclass that throws; the original is its prototype.
  unfenced_date_now() {
    return String(Object.getPrototypeOf(Date).now());
  },
};

function attempt(ctx, name, fn) {
  let outcome;
  try {
    outcome = fn();
  } catch (e) {
    outcome = `denied: ${e && e.name ? e.name : typeof e}`;
  }
  ctx.upsert("probes", { name, outcome });
}

projection.handler((event, ctx) => {
  if (event.eventType === "Escape") {
    const name = event.json.attempt;
    attempt(ctx, name, TRAPPING[name]);
    return;
  }
  for (const [name, fn] of Object.entries(ATTEMPTS)) attempt(ctx, name, fn);
});

export const { manifest, handle } = projection.exports();
export default projection;

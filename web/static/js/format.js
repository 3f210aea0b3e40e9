// format.js — sizes, ages and percentages, written the way the CLI writes
// them. parseBytes accepts what model.ParseBytes accepts, so a size typed
// here means the same as on the command line.

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;
export const PiB = 1024 * TiB;

// Checked in this order (longest suffix first), as the server does.
const UNITS = [
  ["PiB", PiB], ["TiB", TiB], ["GiB", GiB], ["MiB", MiB], ["KiB", KiB],
  ["PB", 1e15], ["TB", 1e12], ["GB", 1e9], ["MB", 1e6], ["KB", 1e3], ["kB", 1e3],
  ["P", PiB], ["T", TiB], ["G", GiB], ["M", MiB], ["K", KiB],
  ["B", 1],
];

const INT = /^\d+$/;
const FLOAT = /^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

// parseBytes turns "512MiB", "2GiB", "1.5G", "10GB" or a plain number into
// a number of bytes. It throws an Error whose message says how to fix the
// text.
export function parseBytes(text) {
  const t = String(text).trim();
  if (t === "") throw new Error("is required: give a size with a unit, e.g. 512MiB or 2GiB");
  let mult = 1;
  let num = t;
  for (const [suffix, m] of UNITS) {
    if (t.endsWith(suffix)) {
      mult = m;
      num = t.slice(0, -suffix.length).trim();
      break;
    }
  }
  if (num === "") throw new Error(`"${text}" has no number (e.g. 512MiB or 2GiB)`);
  if (num.startsWith("-")) throw new Error(`"${text}" is negative`);
  if (!INT.test(num) && !FLOAT.test(num)) {
    throw new Error(`"${text}" is not a size (use a number with a unit: B, KiB, MiB, GiB, TiB)`);
  }
  const v = Math.round(Number(num) * mult);
  if (!Number.isSafeInteger(v)) throw new Error(`"${text}" is too large`);
  return v;
}

// formatBytes writes a size with the largest binary unit that keeps it
// exact to one decimal: 1GiB, 1.5GiB, 512MiB, 100B.
export function formatBytes(b) {
  if (b === undefined || b === null) return "";
  if (b < 0) return "-" + formatBytes(-b);
  for (const [s, m] of [["PiB", PiB], ["TiB", TiB], ["GiB", GiB], ["MiB", MiB], ["KiB", KiB]]) {
    if (b >= m) {
      if (b % m === 0) return `${b / m}${s}`;
      return `${(b / m).toFixed(1)}${s}`;
    }
  }
  return `${b}B`;
}

// formatAge writes how long ago t (an RFC 3339 string) was: 42s, 5m, 3h, 2d.
export function formatAge(t, now = Date.now()) {
  const ms = now - Date.parse(t);
  if (!Number.isFinite(ms)) return "";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

// formatTime writes the local wall-clock time of t (HH:MM:SS).
export function formatTime(t) {
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return "";
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

// percent is 100 × used / total, or 0 when total is 0.
export function percent(used, total) {
  if (!total) return 0;
  return Math.round((100 * used) / total);
}

// score writes a placement score with two decimals.
export function score(x) {
  return typeof x === "number" ? x.toFixed(2) : "";
}

// tones.js — which colour a host state or VM phase is shown in.

export function phaseTone(phase) {
  switch (phase) {
    case "running": return "ok";
    case "pending": case "scheduling": case "creating": case "stopping": case "deleting": return "busy";
    case "stopped": case "paused": return "";
    case "failed": return "bad";
    default: return "warn";
  }
}

export function hostTone(state) {
  switch (state) {
    case "ready": return "ok";
    case "maintenance": case "standby": return "warn";
    case "down": case "fenced": return "bad";
    default: return "";
  }
}

// What the map and the pico page both do: go to a pico, ask for a move.

import { api, store } from "./store.js";

export function parseHash() {
  const m = location.hash.match(/^#\/pico\/([^/]+)(?:\/([a-z]+))?/);
  return m ? { did: decodeURIComponent(m[1]), tab: m[2] || "about" } : { did: null, tab: "about" };
}

export function navigate(did, tab = "about") {
  location.hash = did ? `#/pico/${encodeURIComponent(did)}/${tab}` : "#/";
}

// The node runs the move in the background and reports its stages as "move" events.
export async function requestMove(did, to) {
  const { id } = await api.send("POST", "/api/mesh/move", { did, to });
  if (!store.moves.has(id)) store.moves.set(id, { id, did, to, stage: "requested", ms: 0 });
  store.emit("move", store.moves.get(id));
  return id;
}

// Small DOM helpers shared by the page's panels.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "for") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export const pct = (p) => `${(p * 100).toFixed(1)}%`;
export const seconds = (s) => (s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${(s % 60).toFixed(0)} s`);
export function clock(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}
export function bytesText(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1e3))} kB`;
}

export function showError(message) {
  const p = el("p", { text: message });
  const close = el("button", { class: "close", type: "button", "aria-label": "Dismiss this message", text: "×" });
  close.addEventListener("click", () => p.remove());
  p.append(close);
  $("errors").append(p);
  // Keep the last few only.
  while ($("errors").children.length > 4) $("errors").firstElementChild.remove();
}

export function showNotice(message) {
  $("notices").replaceChildren(el("p", { text: message }));
}

export function announce(message) {
  // Clearing first makes screen readers repeat an identical message.
  $("announcer").textContent = "";
  requestAnimationFrame(() => ($("announcer").textContent = message));
}

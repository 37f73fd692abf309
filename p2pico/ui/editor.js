// A KRL editor: a textarea with line numbers; a syntax or compile error is marked at its
// line (the gutter number, a band across the line, and the message under it).

import { h } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";

const html = htm.bind(h);
const LINE = 18; // px; style.css sets the same line-height on .krl-editor textarea

export function KrlEditor({ value, onInput, error }) {
  const area = useRef(null);
  const [scroll, setScroll] = useState(0);
  const lines = value.split("\n").length;
  useEffect(() => {
    // Bring the error's line into view.
    if (error && error.line && area.current) {
      const top = (error.line - 1) * LINE;
      const el = area.current;
      if (top < el.scrollTop || top > el.scrollTop + el.clientHeight - LINE) el.scrollTop = Math.max(0, top - 3 * LINE);
      setScroll(el.scrollTop);
    }
  }, [error && error.line, error && error.column]);
  const numbers = [];
  for (let i = 1; i <= lines; i++) {
    numbers.push(html`<div key=${i} class=${error && error.line === i ? "err" : ""} data-line=${i}>${i}</div>`);
  }
  return html`
    <div class="krl-editor" data-testid="krl-editor">
      <div class="gutter" style=${{ transform: `translateY(${-scroll}px)` }} aria-hidden="true">${numbers}</div>
      <div class="text">
        ${error && error.line && html`<div class="err-band" data-testid="error-band" data-line=${error.line}
          style=${{ top: `${8 + (error.line - 1) * LINE - scroll}px` }}></div>`}
        <textarea ref=${area} spellcheck="false" value=${value} data-testid="krl-source"
          onInput=${(e) => onInput(e.target.value)} onScroll=${(e) => setScroll(e.target.scrollTop)}></textarea>
      </div>
    </div>
    ${error && error.line && html`<div class="err-at" data-testid="error-at" data-line=${error.line} data-column=${error.column}>
      <b>line ${error.line}, column ${error.column}</b>: ${error.error}</div>`}`;
}

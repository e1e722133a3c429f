// Participant page: the bar follows the latest feedback value (0..1); NaN/missing keeps the last
// value, which is also how intermittent feedback is held between updates.
"use strict";

(function () {
  const thermo = document.getElementById("thermometer");
  const fill = document.getElementById("fill");
  const instruction = document.getElementById("instruction");
  const link = document.getElementById("link");
  let run = {};

  function instructionFor(block) {
    const table = run.instructions || {};
    if (block && Object.prototype.hasOwnProperty.call(table, block)) return table[block];
    return block || "Get ready";
  }

  function showBlock(block) {
    instruction.textContent = instructionFor(block);
    instruction.dataset.block = block || "";
    const shown = run.feedback_blocks;
    const visible = !Array.isArray(shown) || !block || shown.includes(block);
    thermo.classList.toggle("hidden", !visible);
  }

  function setValue(v) {
    const clipped = Math.min(1, Math.max(0, v));
    fill.style.height = (100 * clipped).toFixed(2) + "%";
    thermo.dataset.value = String(clipped);
    thermo.setAttribute("aria-valuenow", String(clipped));
  }

  function record(r) {
    if (r.block !== undefined && r.block !== null) showBlock(r.block);
    if (theramarkNumber(r.feedback)) setValue(r.feedback);
    thermo.dataset.volume = String(r.volume);
  }

  theramarkFeed({
    snapshot(info, records) {
      run = info;
      const blocks = run.blocks || [];
      showBlock(blocks.length ? blocks[0].trial_type : "");
      for (const r of records) record(r);
    },
    run(info) { run = info; showBlock(instruction.dataset.block); },
    record: record,
    status(text, ok) { link.classList.toggle("lost", !ok); link.title = text; },
  });
})();

/*
 * segqa window/level: the one definition, shared by the verify screen (templates/mask_review.liquid.html, which
 * carries it inline: templates.expand_includes puts this file in the template for Ground Truth and the portal)
 * and the portal's crowd-semantic-segmentation editor (static/crowd-elements.js; the portal page loads this
 * file first).
 *
 * A true window/level on the grey values v (0..255) of the slice, through a 256-entry lookup table:
 *     out = clamp((v - (L - W/2)) / W * 255, 0, 255)
 * Drag with the right mouse button: left/right changes the window W, up/down the level L (as in radiology
 * viewers). Presets: "auto" (0.5-99.5 percentile of the slice, as `segqa batch` overlays use), "full" (W 256,
 * L 128: the PNG as stored), "contrast" (half the auto window, same level: gray/white matter apart).
 */
(function (root) {
  "use strict";
  if (root.segqaWindowLevel) { return; }

  var MIN_WINDOW = 1, MAX_WINDOW = 512;

  function clampState(s) {
    return { window: Math.max(MIN_WINDOW, Math.min(MAX_WINDOW, Number(s.window))),
             level: Math.max(-128, Math.min(383, Number(s.level))) };
  }

  /** Lookup table (Uint8ClampedArray, 256 entries) of the window/level state {window, level}. */
  function lut(state) {
    var s = clampState(state), lo = s.level - s.window / 2, table = new Uint8ClampedArray(256);
    for (var v = 0; v < 256; v++) { table[v] = Math.max(0, Math.min(255, (v - lo) / s.window * 255)); }
    return table;
  }

  /** The robust window of grey values (any array-like of 0..255): 0.5-99.5 percentile. */
  function autoWindow(grey) {
    var hist = new Uint32Array(256), n = grey.length, i;
    for (i = 0; i < n; i++) { hist[grey[i]]++; }
    function pct(p) {
      var target = Math.floor(p * (n - 1)), seen = 0;
      for (var v = 0; v < 256; v++) { seen += hist[v]; if (seen > target) { return v; } }
      return 255;
    }
    var lo = pct(0.005), hi = pct(0.995);
    return { window: Math.max(8, hi - lo), level: (hi + lo) / 2 };
  }

  /** The state a preset names ("auto", "full", "contrast"); "full" needs no grey values. */
  function preset(name, grey) {
    if (name === "full") { return { window: 256, level: 128 }; }
    var auto = autoWindow(grey);
    if (name === "contrast") { return { window: Math.max(8, auto.window / 2), level: auto.level }; }
    return auto;
  }

  /** Grey values of an RGBA pixel array (a decoded PNG): the mean of R, G and B. */
  function greyOf(rgba) {
    var n = rgba.length / 4, out = new Uint8Array(n);
    for (var i = 0; i < n; i++) { out[i] = Math.round((rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3); }
    return out;
  }

  /** Write grey values through the table into RGBA ``out`` (ImageData.data), opaque. */
  function apply(grey, table, out) {
    for (var i = 0; i < grey.length; i++) {
      var v = table[grey[i]];
      out[4 * i] = v; out[4 * i + 1] = v; out[4 * i + 2] = v; out[4 * i + 3] = 255;
    }
    return out;
  }

  function label(state) {
    var s = clampState(state);
    return "W " + Math.round(s.window) + " / L " + Math.round(s.level);
  }

  /**
   * Right-button drag on ``element`` changes the window/level: get() returns the state, set(state) takes the
   * new one (and redraws). Returns true from the pointerdown handler's point of view when it took the drag.
   */
  function attachDrag(element, get, set) {
    var drag = null;
    element.addEventListener("contextmenu", function (ev) { ev.preventDefault(); });
    element.addEventListener("pointerdown", function (ev) {
      if (ev.button !== 2) { return; }
      ev.preventDefault();
      ev.stopImmediatePropagation();
      if (element.setPointerCapture) { element.setPointerCapture(ev.pointerId); }
      var s = get();
      drag = { x: ev.clientX, y: ev.clientY, window: s.window, level: s.level };
    }, true);
    element.addEventListener("pointermove", function (ev) {
      if (!drag) { return; }
      ev.stopImmediatePropagation();
      set(clampState({ window: drag.window + (ev.clientX - drag.x), level: drag.level - (ev.clientY - drag.y) }));
    }, true);
    function end(ev) { if (drag) { drag = null; ev.stopImmediatePropagation(); } }
    element.addEventListener("pointerup", end, true);
    element.addEventListener("pointercancel", end, true);
  }

  root.segqaWindowLevel = { lut: lut, autoWindow: autoWindow, preset: preset, greyOf: greyOf, apply: apply,
                            label: label, clamp: clampState, attachDrag: attachDrag,
                            PRESETS: ["auto", "full", "contrast"] };
})(window);

/*
 * segqa's own implementation of the Crowd HTML Elements that Ground Truth custom templates use, so the same
 * template runs in the local review portal with no external script.
 *
 * Elements: crowd-form, crowd-button, crowd-card, crowd-radio-group, crowd-radio-button, crowd-checkbox,
 * crowd-instructions (short-summary, detailed-instructions, positive-example, negative-example),
 * crowd-alert, crowd-input, crowd-text-area, crowd-semantic-segmentation (a mask editor, see its class).
 *
 * Form output (what crowd-form submits), as Ground Truth builds it — one JSON object keyed by `name`:
 *   crowd-radio-button, crowd-checkbox   {"<name>": {"<value>": true|false}}   (value defaults to "on";
 *                                        several elements with one name share one object)
 *   crowd-input, crowd-text-area         {"<name>": "<text>"}
 *   native input/textarea/select         {"<name>": "<value>"} (checkboxes and radios only when checked)
 *   crowd-semantic-segmentation          {"<name>": {labeledImage: {pngImageData}, labelMappings,
 *                                        initialValueModified, inputImageProperties: {height, width}}}
 * Disabled elements are left out. The object is what Ground Truth stores as the worker's answerContent and
 * hands the post-labeling Lambda as annotationData.content (a JSON string).
 *
 * Submitting: crowd-form dispatches a cancelable "submit" event on itself (listeners and the onsubmit
 * property may call preventDefault() to refuse), checks `required` fields, then POSTs the output as JSON to
 * <meta name="crowd-submit-url"> with the token of <meta name="csrf-token"> in the X-CSRF-Token header. Without
 * that meta element (a template opened as a plain file) it shows the output instead: a preview.
 */
(function () {
  "use strict";
  if (!window.customElements || window.customElements.get("crowd-form")) { return; }

  var FONT = 'font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;';

  function meta(name) {
    var el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute("content") : null;
  }

  function flag(el, name) {
    // Boolean attributes as in HTML: present means true, except the literal string "false".
    return el.hasAttribute(name) && el.getAttribute(name) !== "false";
  }

  function whenParsed(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", fn, { once: true });
    } else {
      fn();
    }
  }

  function fire(el, type, detail) {
    el.dispatchEvent(new CustomEvent(type, { bubbles: true, composed: true, detail: detail }));
  }

  function shadow(el, html, opts) {
    var root = el.attachShadow(Object.assign({ mode: "open" }, opts || {}));
    root.innerHTML = html;
    return root;
  }

  // ---------------------------------------------------------------------------------------------- crowd-form

  class CrowdForm extends HTMLElement {
    constructor() {
      super();
      this._root = shadow(this,
        "<style>:host{display:block}" +
        ".status{" + FONT + "margin:10px 0;padding:8px 12px;border-radius:6px;display:none;white-space:pre-wrap}" +
        ".status.error{display:block;background:#fff5f5;border:1px solid #cf222e;color:#82071e}" +
        ".status.info{display:block;background:#f0f7ff;border:1px solid #0969da;color:#0a3069}" +
        ".status.success{display:block;background:#f0fff4;border:1px solid #1a7f37;color:#044f1e}</style>" +
        '<slot></slot><div class="status" role="status" aria-live="polite" part="status"></div>');
      this._status = this._root.querySelector(".status");
      this._busy = false;
    }

    connectedCallback() {
      var self = this;
      whenParsed(function () { self._ensureSubmitButton(); });
    }

    _ensureSubmitButton() {
      // Ground Truth appends a submit button when the template has none.
      var buttons = this.querySelectorAll('crowd-button[form-action="submit"]');
      if (buttons.length === 0) {
        var b = document.createElement("crowd-button");
        b.setAttribute("form-action", "submit");
        b.setAttribute("variant", "primary");
        b.textContent = "Submit";
        this.appendChild(b);
      }
    }

    get submitting() { return this._busy; }

    _say(kind, text) {
      this._status.className = "status " + kind;
      this._status.textContent = text;
    }

    _controls() {
      var self = this;
      return Array.prototype.filter.call(this.querySelectorAll("[name]"), function (el) {
        return el.closest("crowd-form") === self && !isDisabled(el);
      });
    }

    /** The form output object (see the header of this file). */
    serialize() {
      var out = {};
      this._controls().forEach(function (el) {
        var tag = el.tagName.toLowerCase();
        var name = el.getAttribute("name");
        if (tag === "crowd-checkbox" || tag === "crowd-radio-button") {
          var value = el.getAttribute("value") || "on";
          if (!out[name] || typeof out[name] !== "object") { out[name] = {}; }
          out[name][value] = !!el.checked;
        } else if (tag === "crowd-input" || tag === "crowd-text-area") {
          out[name] = String(el.value == null ? "" : el.value);
        } else if (tag === "input") {
          var type = (el.getAttribute("type") || "text").toLowerCase();
          if (type === "checkbox" || type === "radio") {
            if (el.checked) { out[name] = el.value; }
          } else if (["submit", "button", "reset", "image", "file"].indexOf(type) < 0) {
            out[name] = el.value;
          }
        } else if (tag === "textarea" || tag === "select") {
          out[name] = el.value;
        } else if (tag === "crowd-semantic-segmentation") {
          out[name] = el.value;
        }
      });
      return out;
    }

    _firstInvalid() {
      var controls = this._controls();
      for (var i = 0; i < controls.length; i++) {
        var el = controls[i];
        if (typeof el.validate === "function") {
          if (!el.validate()) { return el; }
        } else if (typeof el.checkValidity === "function" && !el.checkValidity()) {
          return el;
        }
      }
      // crowd-checkbox / crowd-radio-button groups marked required need at least one checked box.
      var self = this;
      var required = this.querySelectorAll("crowd-checkbox[required], crowd-radio-button[required]");
      for (var j = 0; j < required.length; j++) {
        var box = required[j];
        if (box.closest("crowd-form") !== self || isDisabled(box)) { continue; }
        var name = box.getAttribute("name");
        var peers = name ? self.querySelectorAll(box.tagName.toLowerCase() + '[name="' + CSS.escape(name) + '"]') : [box];
        var any = Array.prototype.some.call(peers, function (p) { return p.checked; });
        if (!any) { return box; }
      }
      return null;
    }

    /** Submit as the worker's Submit button does: the submit event first, then validation, then POST. */
    submit() {
      if (this._busy) { return; }
      var ev = new Event("submit", { bubbles: true, cancelable: true });
      if (!this.dispatchEvent(ev)) { return; }
      var invalid = this._firstInvalid();
      if (invalid) {
        this._say("error", (invalid.getAttribute("error-message") || "Please fill in every required field.") );
        if (typeof invalid.focus === "function") { invalid.focus(); }
        return;
      }
      this._send(this.serialize());
    }

    requestSubmit() { this.submit(); }

    reset() {
      this._controls().forEach(function (el) {
        if (typeof el._resetToDefault === "function") { el._resetToDefault(); }
        else if ("defaultValue" in el && el.type !== "hidden") { el.value = el.defaultValue; }
        if ("defaultChecked" in el) { el.checked = el.defaultChecked; }
      });
      this._say("", "");
    }

    _setBusy(busy) {
      this._busy = busy;
      this.toggleAttribute("submitting", busy);
      Array.prototype.forEach.call(this.querySelectorAll('crowd-button[form-action="submit"]'), function (b) {
        b._setBusy(busy);
      });
    }

    _send(output) {
      var url = meta("crowd-submit-url");
      if (!url) {
        this._say("info", "Preview: this is the output Ground Truth would receive.\n" + JSON.stringify(output, null, 2));
        fire(this, "crowd-form-output", output);
        return;
      }
      var self = this;
      this._setBusy(true);
      this._say("info", "Submitting\u2026");
      fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": meta("csrf-token") || "" },
        body: JSON.stringify(output)
      }).then(function (resp) {
        return resp.json().catch(function () { return {}; }).then(function (body) {
          if (resp.ok) {
            self._say("success", body.message || "Submitted.");
            fire(self, "crowd-form-submitted", body);
            if (body.next) { window.location.assign(body.next); }
            else { self._setBusy(false); }
          } else {
            self._setBusy(false);
            self._say("error", "Not submitted: " + (body.detail || resp.statusText || ("HTTP " + resp.status)));
          }
        });
      }).catch(function () {
        self._setBusy(false);
        self._say("error", "Could not reach the review portal. Your answers are still on this page; " +
          "try Submit again in a moment.");
      });
    }
  }

  function isDisabled(el) {
    if (flag(el, "disabled")) { return true; }
    return el.disabled === true;
  }

  // -------------------------------------------------------------------------------------------- crowd-button

  class CrowdButton extends HTMLElement {
    static get observedAttributes() { return ["disabled"]; }

    constructor() {
      super();
      var root = shadow(this,
        "<style>:host{display:inline-block;margin:6px 0}" +
        "button{" + FONT + "font-size:15px;padding:8px 18px;border-radius:6px;border:1px solid #8c959f;" +
        "background:#f6f8fa;color:#1b1f23;cursor:pointer}" +
        ":host([variant=primary]) button{background:#1f6feb;border-color:#1f6feb;color:#fff;font-weight:600}" +
        "button:focus-visible{outline:3px solid #0969da;outline-offset:2px}" +
        "button:disabled{opacity:.55;cursor:not-allowed}</style>" +
        '<button type="button" part="button"><slot></slot></button>', { delegatesFocus: true });
      this._button = root.querySelector("button");
      var self = this;
      this._button.addEventListener("click", function () { self._activate(); });
    }

    attributeChangedCallback() { this._button.disabled = flag(this, "disabled") || this._busy === true; }

    _setBusy(busy) { this._busy = busy; this.attributeChangedCallback(); }

    _activate() {
      if (flag(this, "disabled") || this._busy) { return; }
      var form = this.closest("crowd-form");
      var action = this.getAttribute("form-action");
      if (!form) { return; }
      if (action === "submit") { form.submit(); }
      else if (action === "reset") { form.reset(); }
    }

    click() { this._button.click(); }
  }

  // ---------------------------------------------------------------------------------------------- crowd-card

  class CrowdCard extends HTMLElement {
    static get observedAttributes() { return ["heading", "image"]; }

    constructor() {
      super();
      this._root = shadow(this,
        "<style>:host{display:flex;flex-direction:column;" + FONT + "background:#fff;border-radius:8px;" +
        "box-shadow:0 1px 3px rgba(0,0,0,.18)}" +
        ".content{flex:1 1 auto;display:flex;flex-direction:column}::slotted(*){flex:1 1 auto}" +
        ".heading{font-weight:600;padding:8px 10px 0}.heading:empty{display:none}" +
        "img{display:block;width:100%;border-radius:8px 8px 0 0}img:not([src]){display:none}" +
        "</style>" +
        '<img part="image" alt=""><div class="heading" part="heading"></div><div class="content"><slot></slot></div>');
    }

    attributeChangedCallback() {
      this._root.querySelector(".heading").textContent = this.getAttribute("heading") || "";
      var img = this._root.querySelector("img");
      if (this.getAttribute("image")) { img.setAttribute("src", this.getAttribute("image")); }
      else { img.removeAttribute("src"); }
    }
  }

  // ------------------------------------------------------------------------------ radio buttons and boxes

  var TOGGLE_CSS =
    "<style>:host{display:inline-flex;align-items:center;gap:6px;cursor:pointer;" + FONT + "margin:2px 10px 2px 0;" +
    "outline:none;border-radius:4px}:host(:focus-visible){box-shadow:0 0 0 3px #0969da}" +
    ":host([disabled]){opacity:.5;cursor:not-allowed}" +
    ".mark{width:16px;height:16px;border:2px solid #57606a;box-sizing:border-box;flex:none;display:inline-block;" +
    "background:#fff}" +
    ":host([checked]) .mark{background:#1f6feb;border-color:#1f6feb;box-shadow:inset 0 0 0 3px #fff}</style>";

  class Toggle extends HTMLElement {
    static get observedAttributes() { return ["checked", "disabled"]; }

    constructor(round) {
      super();
      shadow(this, TOGGLE_CSS + '<span class="mark" part="mark" style="border-radius:' + (round ? "50%" : "3px") +
        '"></span><slot></slot>');
      var self = this;
      this.addEventListener("click", function () { self._userToggle(); });
      this.addEventListener("keydown", function (ev) {
        if (ev.key === " " || ev.key === "Enter") { ev.preventDefault(); self._userToggle(); }
      });
    }

    connectedCallback() {
      if (!this.hasAttribute("tabindex")) { this.setAttribute("tabindex", "0"); }
      if (this._initial === undefined) { this._initial = this.hasAttribute("checked"); }
      this.attributeChangedCallback();
    }

    attributeChangedCallback() {
      this.setAttribute("aria-checked", String(this.checked));
      this.setAttribute("aria-disabled", String(flag(this, "disabled")));
    }

    get checked() { return this.hasAttribute("checked"); }
    set checked(v) { this.toggleAttribute("checked", !!v); }
    get name() { return this.getAttribute("name"); }
    get value() { return this.getAttribute("value") || "on"; }
    get disabled() { return flag(this, "disabled"); }
    set disabled(v) { this.toggleAttribute("disabled", !!v); }

    _resetToDefault() { this.checked = !!this._initial; }

    _changed() {
      this.dispatchEvent(new Event("change", { bubbles: true }));
      fire(this, "checked-changed", { value: this.checked });
    }
  }

  class CrowdCheckbox extends Toggle {
    constructor() { super(false); }

    connectedCallback() { this.setAttribute("role", "checkbox"); super.connectedCallback(); }

    _userToggle() {
      if (this.disabled) { return; }
      this.checked = !this.checked;
      this._changed();
    }

    validate() { return true; } // `required` is checked per name by crowd-form
  }

  class CrowdRadioButton extends Toggle {
    constructor() { super(true); }

    connectedCallback() { this.setAttribute("role", "radio"); super.connectedCallback(); }

    _peers() {
      var group = this.closest("crowd-radio-group");
      var scope = group || this.closest("crowd-form") || document;
      var name = this.getAttribute("name");
      var self = this;
      return Array.prototype.filter.call(scope.querySelectorAll("crowd-radio-button"), function (b) {
        if (group) { return b.closest("crowd-radio-group") === group; }
        return b === self || (name && b.getAttribute("name") === name);
      });
    }

    _userToggle() {
      if (this.disabled || this.checked) { return; }
      var self = this;
      this._peers().forEach(function (b) {
        if (b !== self && b.checked) { b.checked = false; b._changed(); }
      });
      this.checked = true;
      this._changed();
    }
  }

  class CrowdRadioGroup extends HTMLElement {
    constructor() {
      super();
      shadow(this, "<style>:host{display:block}</style><slot></slot>");
      var self = this;
      this.addEventListener("keydown", function (ev) { self._keys(ev); });
    }

    connectedCallback() { this.setAttribute("role", "radiogroup"); }

    _buttons() {
      var self = this;
      return Array.prototype.filter.call(this.querySelectorAll("crowd-radio-button"), function (b) {
        return b.closest("crowd-radio-group") === self && !b.disabled;
      });
    }

    _keys(ev) {
      var step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[ev.key];
      if (!step) { return; }
      var buttons = this._buttons();
      var i = buttons.indexOf(document.activeElement);
      if (i < 0 || buttons.length === 0) { return; }
      ev.preventDefault();
      var next = buttons[(i + step + buttons.length) % buttons.length];
      next.focus();
      next._userToggle();
    }

    /** Like the Ground Truth element: the state of every radio button in the group. */
    get value() {
      var out = {};
      this._buttons().forEach(function (b) {
        var name = b.getAttribute("name") || "radio";
        out[name] = out[name] || {};
        out[name][b.value] = b.checked;
      });
      return [out];
    }
  }

  // ------------------------------------------------------------------------------- text: input, text-area

  var FIELD_CSS =
    "<style>:host{display:block;margin:6px 0;" + FONT + "}label{display:block;font-size:13px;color:#424a53;" +
    "margin-bottom:3px}label:empty{display:none}" +
    "input,textarea{" + FONT + "font-size:14px;width:100%;box-sizing:border-box;padding:6px 8px;border:1px solid #8c959f;" +
    "border-radius:6px}input:focus,textarea:focus{outline:2px solid #0969da;outline-offset:0}" +
    ".error{color:#cf222e;font-size:12px;min-height:0}.count{color:#57606a;font-size:12px;text-align:right}" +
    ":host([invalid]) input,:host([invalid]) textarea{border-color:#cf222e}</style>";

  class TextField extends HTMLElement {
    static get observedAttributes() {
      return ["label", "placeholder", "disabled", "max-length", "min-length", "required", "type", "rows",
        "max-value", "min-value"];
    }

    constructor(multiline) {
      super();
      var control = multiline ? '<textarea part="textarea"></textarea>' : '<input part="input">';
      var root = shadow(this, FIELD_CSS + '<label part="label"></label>' + control +
        '<div class="count" hidden></div><div class="error" part="error"></div>', { delegatesFocus: true });
      this._root = root;
      this._field = root.querySelector(multiline ? "textarea" : "input");
      this._label = root.querySelector("label");
      this._error = root.querySelector(".error");
      this._count = root.querySelector(".count");
      var self = this;
      this._field.addEventListener("input", function () { self._filter(); self._updateCount(); if (flag(self, "auto-validate")) { self.validate(); } });
      this._field.addEventListener("change", function () { self.dispatchEvent(new Event("change", { bubbles: true })); });
    }

    connectedCallback() {
      if (this._initial === undefined) {
        this._initial = this.getAttribute("value") || "";
        this._field.value = this._initial;
      }
      this._updateCount();
      if (flag(this, "auto-focus")) { var f = this._field; setTimeout(function () { f.focus(); }, 0); }
    }

    attributeChangedCallback() {
      var f = this._field;
      this._label.textContent = this.getAttribute("label") || "";
      f.setAttribute("aria-label", this.getAttribute("label") || this.getAttribute("name") || "");
      if (this.getAttribute("placeholder")) { f.setAttribute("placeholder", this.getAttribute("placeholder")); }
      f.disabled = flag(this, "disabled");
      f.required = flag(this, "required");
      var maxLength = this.getAttribute("max-length");
      if (maxLength) { f.setAttribute("maxlength", maxLength); } else { f.removeAttribute("maxlength"); }
      if (f.tagName === "INPUT") {
        f.setAttribute("type", this.getAttribute("type") || "text");
        if (this.getAttribute("max-value") !== null) { f.setAttribute("max", this.getAttribute("max-value")); }
        if (this.getAttribute("min-value") !== null) { f.setAttribute("min", this.getAttribute("min-value")); }
      } else {
        f.setAttribute("rows", this.getAttribute("rows") || "2");
      }
      this._count.hidden = !flag(this, "char-counter");
    }

    get value() { return this._field.value; }
    set value(v) { this._field.value = v == null ? "" : String(v); this._updateCount(); }
    get name() { return this.getAttribute("name"); }
    get disabled() { return flag(this, "disabled"); }
    set disabled(v) { this.toggleAttribute("disabled", !!v); }

    focus() { this._field.focus(); }

    _resetToDefault() { this.value = this._initial || ""; this.removeAttribute("invalid"); this._error.textContent = ""; }

    _filter() {
      // allowed-pattern: characters that do not match are dropped as the worker types (with auto-validate).
      var pattern = this.getAttribute("allowed-pattern");
      if (!pattern || !flag(this, "auto-validate")) { return; }
      var re;
      try { re = new RegExp(pattern); } catch (e) { return; }
      var kept = Array.prototype.filter.call(this._field.value, function (ch) { return re.test(ch); }).join("");
      if (kept !== this._field.value) { this._field.value = kept; }
    }

    _updateCount() {
      var max = this.getAttribute("max-length");
      this._count.textContent = this._field.value.length + (max ? " / " + max : "");
    }

    /** True when the value satisfies required / min-length / max-length / min-value / max-value. */
    validate() {
      var v = this._field.value;
      var ok = true;
      if (flag(this, "required") && v.trim() === "") { ok = false; }
      var minLength = Number(this.getAttribute("min-length") || 0);
      if (v.length && v.length < minLength) { ok = false; }
      var maxLength = Number(this.getAttribute("max-length") || 0);
      if (maxLength && v.length > maxLength) { ok = false; }
      if (this._field.type === "number" && v !== "") {
        var n = Number(v);
        if (Number.isNaN(n)) { ok = false; }
        if (this.getAttribute("min-value") !== null && n < Number(this.getAttribute("min-value"))) { ok = false; }
        if (this.getAttribute("max-value") !== null && n > Number(this.getAttribute("max-value"))) { ok = false; }
      }
      this.toggleAttribute("invalid", !ok);
      this._error.textContent = ok ? "" : (this.getAttribute("error-message") || "This field needs a valid value.");
      return ok;
    }
  }

  class CrowdInput extends TextField { constructor() { super(false); } }

  class CrowdTextArea extends TextField { constructor() { super(true); } }

  // --------------------------------------------------------------------------------------------- crowd-alert

  class CrowdAlert extends HTMLElement {
    static get observedAttributes() { return ["type", "dismissible"]; }

    constructor() {
      super();
      this._root = shadow(this,
        "<style>:host{display:block;margin:8px 0}" +
        ".alert{" + FONT + "display:flex;gap:10px;align-items:flex-start;padding:10px 12px;border-radius:6px;" +
        "border:1px solid #0969da;background:#f0f7ff;color:#0a3069}" +
        ".alert.success{border-color:#1a7f37;background:#f0fff4;color:#044f1e}" +
        ".alert.warning{border-color:#bf8700;background:#fff8c5;color:#633c01}" +
        ".alert.error{border-color:#cf222e;background:#fff5f5;color:#82071e}" +
        ".body{flex:1}button{border:0;background:transparent;font-size:18px;line-height:1;cursor:pointer;color:inherit}" +
        "button[hidden]{display:none}</style>" +
        '<div class="alert" role="alert" part="alert"><div class="body"><slot></slot></div>' +
        '<button type="button" aria-label="Dismiss" hidden>\u00d7</button></div>');
      var self = this;
      this._root.querySelector("button").addEventListener("click", function () {
        self.style.display = "none";
        fire(self, "crowd-alert-dismissed");
      });
    }

    attributeChangedCallback() {
      var type = this.getAttribute("type") || "info";
      this._root.querySelector(".alert").className = "alert " + type;
      this._root.querySelector(".alert").setAttribute("role", type === "error" || type === "warning" ? "alert" : "status");
      this._root.querySelector("button").hidden = !flag(this, "dismissible");
    }

    connectedCallback() { this.attributeChangedCallback(); }
  }

  // -------------------------------------------------------------------------------------- crowd-instructions

  var SECTIONS = [
    ["short-summary", "summary", "Summary"],
    ["detailed-instructions", "detailed", "Detailed instructions"],
    ["positive-example", "positive", "Good example"],
    ["negative-example", "negative", "Bad example"]
  ];

  class CrowdInstructions extends HTMLElement {
    static get observedAttributes() { return ["link-text", "link-type"]; }

    constructor() {
      super();
      var sections = SECTIONS.map(function (s) {
        return '<section class="' + s[1] + '"><h3>' + s[2] + '</h3><slot name="' + s[1] + '"></slot></section>';
      }).join("");
      this._root = shadow(this,
        "<style>:host{display:block;margin:0 0 10px;" + FONT + "}" +
        ".bar{display:flex;align-items:center;gap:10px}" +
        "button.open{font-size:14px;padding:5px 12px;border-radius:6px;border:1px solid #0969da;background:#fff;color:#0969da;cursor:pointer}" +
        "button.open.link{border:0;padding:0;text-decoration:underline;background:transparent}" +
        "dialog{max-width:min(820px,92vw);max-height:86vh;border:0;border-radius:10px;padding:0;box-shadow:0 10px 40px rgba(0,0,0,.35)}" +
        "dialog::backdrop{background:rgba(0,0,0,.45)}" +
        ".head{display:flex;justify-content:space-between;align-items:center;padding:12px 18px;border-bottom:1px solid #d0d7de}" +
        ".head h2{margin:0;font-size:18px}.body{padding:6px 18px 16px;overflow:auto;max-height:72vh}" +
        "section.empty{display:none}h3{font-size:15px;margin:14px 0 4px}" +
        "section.positive h3{color:#1a7f37}section.negative h3{color:#cf222e}" +
        "button.close{font-size:20px;border:0;background:transparent;cursor:pointer}</style>" +
        '<div class="bar"><button type="button" class="open" part="link" aria-haspopup="dialog"></button></div>' +
        '<dialog part="dialog" aria-label="Instructions"><div class="head"><h2>Instructions</h2>' +
        '<button type="button" class="close" aria-label="Close instructions">\u00d7</button></div>' +
        '<div class="body">' + sections + "</div></dialog>");
      var self = this;
      this._dialog = this._root.querySelector("dialog");
      this._root.querySelector("button.open").addEventListener("click", function () { self.open(); });
      this._root.querySelector("button.close").addEventListener("click", function () { self.close(); });
    }

    connectedCallback() {
      var self = this;
      this.attributeChangedCallback();
      whenParsed(function () { self._assignSlots(); });
    }

    attributeChangedCallback() {
      var button = this._root.querySelector("button.open");
      button.textContent = this.getAttribute("link-text") || "Instructions";
      button.classList.toggle("link", (this.getAttribute("link-type") || "button") === "link");
    }

    _assignSlots() {
      var root = this._root;
      SECTIONS.forEach(function (s) { root.querySelector("section." + s[1]).classList.add("empty"); });
      Array.prototype.forEach.call(this.children, function (child) {
        SECTIONS.forEach(function (s) {
          if (child.tagName.toLowerCase() === s[0]) {
            child.setAttribute("slot", s[1]);
            root.querySelector("section." + s[1]).classList.remove("empty");
          }
        });
      });
    }

    open() { if (!this._dialog.open) { this._dialog.showModal(); } }

    close() { if (this._dialog.open) { this._dialog.close(); } }
  }


  // ------------------------------------------------------------------------------ crowd-semantic-segmentation

  /*
   * A real mask editor with the attributes and output of Ground Truth's crowd-semantic-segmentation:
   *   src            the image; labels  JSON array of label names (1..n, key 1..9 picks one);
   *   initial-value  {"labelMappings": {label: {color}}, "src": <RGBA PNG, each label in its colour>}
   *   value (output) {"labeledImage": {"pngImageData": <base64 PNG>}, "labelMappings": {...},
   *                   "initialValueModified": bool, "inputImageProperties": {"height", "width"}}
   * Tools: brush (B) and eraser (E) with a size ([ and ]), fill of a closed region (F), undo (Ctrl+Z) and
   * redo (Ctrl+Y, Ctrl+Shift+Z), mask opacity and on/off (M), zoom (+, -, 0 = fit; wheel) and pan
   * (Space or middle button + drag), window/level (right-button drag, sliders, presets; W resets; the shared
   * static/window-level.js, one definition with the verify screen). The image is shown as it is stored at the
   * task's URI: `segqa batch` writes every reviewed PNG in radiological orientation (anterior up, the patient's
   * left on the viewer's right; contract.to_display), and the edges say so.
   */
  var SEG_PALETTE = ["#2ca02c", "#1f77b4", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];

  function rgbOf(hex) {
    var m = /^#?([0-9a-f]{6})$/i.exec(String(hex || ""));
    var v = m ? parseInt(m[1], 16) : 0;
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }

  class CrowdSemanticSegmentation extends HTMLElement {
    constructor() {
      super();
      this._root = shadow(this,
        "<style>:host{display:block;" + FONT + "}" +
        ".wrap{display:flex;gap:10px;align-items:flex-start}.main{flex:1;min-width:0}" +
        ".bar{display:flex;flex-wrap:wrap;gap:6px 10px;align-items:center;padding:6px 8px;background:#f4f6f8;" +
        "border:1px solid #d0d7de;border-radius:8px;margin-bottom:6px;font-size:13px}" +
        ".bar button{font-size:13px;padding:4px 9px;border-radius:6px;border:1px solid #8c959f;background:#fff;cursor:pointer}" +
        ".bar button[aria-pressed=true]{background:#0969da;border-color:#0969da;color:#fff}" +
        ".bar button.cls[aria-pressed=true]{background:var(--c);border-color:#1b1f23;color:#fff;text-shadow:0 0 2px #000}" +
        ".bar i{display:inline-block;width:11px;height:11px;border-radius:2px;background:var(--c);margin-right:4px;" +
        "border:1px solid rgba(0,0,0,.4);vertical-align:-1px}.bar label{display:inline-flex;gap:4px;align-items:center}" +
        ".bar output.wl{font:12px monospace;min-width:104px;color:#1b1f23}.bar input[type=range]{width:80px}.sep{width:1px;height:22px;background:#d0d7de}" +
        ".view{position:relative;background:#000;border-radius:6px;overflow:hidden;height:var(--h,560px);cursor:crosshair;" +
        "touch-action:none;user-select:none}.view canvas{position:absolute;left:0;top:0}" +
        ".ori{position:absolute;color:#ffd33d;font:bold 14px monospace;text-shadow:0 0 3px #000;pointer-events:none}" +
        ".ori.a{top:4px;left:50%}.ori.p{bottom:4px;left:50%}.ori.r{left:6px;top:50%}.ori.l{right:6px;top:50%}" +
        ".status{font-size:12px;color:#57606a;margin-top:4px}.side{width:260px;font-size:13px;max-height:var(--h,560px);overflow:auto}" +
        ".side h2{font-size:15px;margin:0 0 6px}.side:empty{display:none}</style>" +
        '<div class="wrap"><div class="main"><div class="bar" part="toolbar"></div>' +
        '<div class="view" part="view"><canvas></canvas>' +
        '<span class="ori a" title="anterior">A</span><span class="ori p" title="posterior">P</span>' +
        '<span class="ori r" title="patient right">R</span><span class="ori l" title="patient left">L</span></div>' +
        '<div class="status" aria-live="polite"></div></div>' +
        '<aside class="side"><h2 class="title"></h2><slot name="short"></slot>' +
        '<details><summary>Full instructions</summary><slot name="full"></slot></details></aside></div>');
      this._canvas = this._root.querySelector("canvas");
      this._view = this._root.querySelector(".view");
      this._status = this._root.querySelector(".status");
      this.tool = "brush";
      this.size = 6;
      this.opacity = 0.5;
      this.maskVisible = true;
      this.current = 1;
      this.zoom = 1;
      this.panX = 0;
      this.panY = 0;
      this._undo = [];
      this._redo = [];
      this.ready = false;
    }

    connectedCallback() {
      if (this._started) { return; }
      this._started = true;
      var self = this;
      whenParsed(function () {
        Array.prototype.forEach.call(self.children, function (c) {
          var tag = c.tagName.toLowerCase();
          if (tag === "short-instructions") { c.setAttribute("slot", "short"); }
          if (tag === "full-instructions") { c.setAttribute("slot", "full"); }
        });
        self._root.querySelector(".title").textContent = self.getAttribute("header") || "";
        self._load().catch(function (e) { self._say("Could not load the image: " + e.message); });
      });
    }

    _say(text) { this._status.textContent = text; }

    _labels() {
      var labels = [];
      try { labels = JSON.parse(this.getAttribute("labels") || "[]"); } catch (e) { labels = []; }
      var initial = {};
      try { initial = JSON.parse(this.getAttribute("initial-value") || "{}"); } catch (e) { initial = {}; }
      var mappings = initial.labelMappings || {};
      labels = labels.map(function (l) { return typeof l === "string" ? l : l.label; });
      return { labels: labels, initial: initial, colours: labels.map(function (l, i) {
        return (mappings[l] && mappings[l].color) || SEG_PALETTE[i % SEG_PALETTE.length]; }) };
    }

    _image(src) {
      return new Promise(function (resolve, reject) {
        var img = new Image();
        img.onload = function () { resolve(img); };
        img.onerror = function () { reject(new Error(src)); };
        img.src = src;
      });
    }

    _pixels(img) {
      var c = document.createElement("canvas");
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      var g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      return g.getImageData(0, 0, c.width, c.height).data;
    }

    async _load() {
      var spec = this._labels();
      this.labelNames = spec.labels;
      this.colours = spec.colours;
      this.rgb = spec.colours.map(rgbOf);
      var img = await this._image(this.getAttribute("src"));
      var w = this.width = img.naturalWidth, h = this.height = img.naturalHeight;
      var px = this._pixels(img);
      this.grey = window.segqaWindowLevel.greyOf(px);
      this.labelMap = new Uint8Array(w * h);
      if (spec.initial.src) {
        var init = this._pixels(await this._image(spec.initial.src));
        var index = {};
        this.rgb.forEach(function (c, k) { index[c.join(",")] = k + 1; });
        for (var j = 0; j < w * h && 4 * j < init.length; j++) {
          if (init[4 * j + 3] > 0) { this.labelMap[j] = index[init[4 * j] + "," + init[4 * j + 1] + "," + init[4 * j + 2]] || 0; }
        }
      }
      this.initialMap = this.labelMap.slice();
      this._buildToolbar();
      this._autoWindow();
      this._bind();
      this._fit();
      this.ready = true;
      this._say("Ready: pick a class (1\u2013" + this.labelNames.length + "), paint with the brush (B), erase (E), fill (F).");
      fire(this, "crowd-semantic-segmentation-ready", {});
    }

    _autoWindow() { this.setWindowLevel(window.segqaWindowLevel.autoWindow(this.grey)); }

    /** Window/level {window, level} (window-level.js): redraws, and shows the values. */
    setWindowLevel(state) {
      var s = window.segqaWindowLevel.clamp(state);
      this.windowWidth = s.window;
      this.level = s.level;
      this._lut = window.segqaWindowLevel.lut(s);
      if (this._root.querySelector('[name="window"]')) { this._syncBar(); }
      this._render();
    }

    get windowLevel() { return { window: this.windowWidth, level: this.level }; }

    _buildToolbar() {
      var self = this, bar = this._root.querySelector(".bar");
      var html = this.labelNames.map(function (name, k) {
        return '<button type="button" class="cls" data-class="' + (k + 1) + '" style="--c:' + self.colours[k] +
          '" title="key ' + (k + 1) + '"><i></i>' + (k + 1) + " " + name.replace(/_/g, " ").replace(/</g, "&lt;") + "</button>";
      }).join("") + '<span class="sep"></span>' +
        '<button type="button" data-tool="brush" title="B">Brush</button>' +
        '<button type="button" data-tool="eraser" title="E">Eraser</button>' +
        '<button type="button" data-tool="fill" title="F">Fill</button>' +
        '<label title="[ and ]">size <input type="range" name="size" min="1" max="40" value="' + this.size + '"></label>' +
        '<span class="sep"></span><button type="button" data-act="undo" title="Ctrl+Z">Undo</button>' +
        '<button type="button" data-act="redo" title="Ctrl+Y">Redo</button><span class="sep"></span>' +
        '<label>opacity <input type="range" name="opacity" min="0" max="100" value="' + Math.round(this.opacity * 100) + '"></label>' +
        '<button type="button" data-act="mask" title="M" aria-pressed="true">Mask</button><span class="sep"></span>' +
        '<label title="right-drag left/right">window <input type="range" name="window" min="1" max="512" value="256"></label>' +
        '<label title="right-drag up/down">level <input type="range" name="level" min="-128" max="383" value="128"></label>' +
        '<output class="wl" name="wl"></output>' +
        '<button type="button" data-preset="auto" title="W">Auto</button><button type="button" data-preset="full">Full</button>' +
        '<button type="button" data-preset="contrast">Contrast</button><span class="sep"></span>' +
        '<button type="button" data-act="zoomin" title="+">+</button><button type="button" data-act="zoomout" title="-">\u2212</button>' +
        '<button type="button" data-act="fit" title="0">Fit</button>';
      bar.innerHTML = html;
      bar.addEventListener("click", function (ev) {
        var b = ev.target.closest("button");
        if (!b) { return; }
        if (b.dataset.class) { self.selectClass(+b.dataset.class); }
        if (b.dataset.tool) { self.selectTool(b.dataset.tool); }
        var act = b.dataset.act;
        if (act === "undo") { self.undo(); } else if (act === "redo") { self.redo(); }
        else if (act === "mask") { self.toggleMask(); }
        if (b.dataset.preset) { self.setWindowLevel(window.segqaWindowLevel.preset(b.dataset.preset, self.grey)); }
        else if (act === "zoomin") { self.zoomBy(1.25); } else if (act === "zoomout") { self.zoomBy(0.8); }
        else if (act === "fit") { self._fit(); }
      });
      bar.addEventListener("input", function (ev) {
        var t = ev.target, v = +t.value;
        if (t.name === "size") { self.size = v; }
        if (t.name === "opacity") { self.opacity = v / 100; }
        if (t.name === "window" || t.name === "level") {
          self.setWindowLevel({ window: t.name === "window" ? v : self.windowWidth, level: t.name === "level" ? v : self.level });
          return;
        }
        self._render();
      });
      this._syncBar();
    }

    _syncBar() {
      var self = this, bar = this._root.querySelector(".bar");
      Array.prototype.forEach.call(bar.querySelectorAll("button.cls"), function (b) {
        b.setAttribute("aria-pressed", String(+b.dataset.class === self.current)); });
      Array.prototype.forEach.call(bar.querySelectorAll("button[data-tool]"), function (b) {
        b.setAttribute("aria-pressed", String(b.dataset.tool === self.tool)); });
      bar.querySelector('[data-act="mask"]').setAttribute("aria-pressed", String(this.maskVisible));
      bar.querySelector('[name="size"]').value = this.size;
      bar.querySelector('[name="window"]').value = Math.round(this.windowWidth);
      bar.querySelector('[name="level"]').value = Math.round(this.level);
      bar.querySelector('[name="wl"]').textContent = window.segqaWindowLevel.label(this.windowLevel);
    }

    selectClass(k) { if (k >= 1 && k <= this.labelNames.length) { this.current = k; if (this.tool === "eraser") { this.tool = "brush"; } this._syncBar(); } }
    selectTool(t) { this.tool = t; this._syncBar(); }
    toggleMask() { this.maskVisible = !this.maskVisible; this._syncBar(); this._render(); }

    _fit() {
      var vw = this._view.clientWidth || 800, vh = this._view.clientHeight || 560;
      this.zoom = Math.min(vw / this.width, vh / this.height);
      this.panX = (vw - this.width * this.zoom) / 2;
      this.panY = (vh - this.height * this.zoom) / 2;
      this._render();
    }

    zoomBy(f, cx, cy) {
      var vw = this._view.clientWidth, vh = this._view.clientHeight;
      cx = cx == null ? vw / 2 : cx; cy = cy == null ? vh / 2 : cy;
      var z = Math.max(0.25, Math.min(40, this.zoom * f));
      this.panX = cx - (cx - this.panX) * z / this.zoom;
      this.panY = cy - (cy - this.panY) * z / this.zoom;
      this.zoom = z;
      this._render();
    }

    /** Image pixel under a point of the view (clientX/Y), or null outside the image. */
    imagePoint(clientX, clientY) {
      var r = this._view.getBoundingClientRect();
      var x = Math.floor((clientX - r.left - this.panX) / this.zoom), y = Math.floor((clientY - r.top - this.panY) / this.zoom);
      return { x: x, y: y, inside: x >= 0 && y >= 0 && x < this.width && y < this.height };
    }

    /** Client coordinates of the centre of image pixel (x, y): for tests and automation. */
    clientPoint(x, y) {
      var r = this._view.getBoundingClientRect();
      return { x: r.left + this.panX + (x + 0.5) * this.zoom, y: r.top + this.panY + (y + 0.5) * this.zoom };
    }

    _snapshot() { this._undo.push(this.labelMap.slice()); if (this._undo.length > 100) { this._undo.shift(); } this._redo = []; }
    undo() { if (this._undo.length) { this._redo.push(this.labelMap); this.labelMap = this._undo.pop(); this._render(); } }
    redo() { if (this._redo.length) { this._undo.push(this.labelMap); this.labelMap = this._redo.pop(); this._render(); } }

    _dab(x, y, value) {
      var r = Math.max(0.5, this.size / 2), r2 = r * r, w = this.width, h = this.height;
      for (var dy = Math.floor(-r); dy <= Math.ceil(r); dy++) {
        for (var dx = Math.floor(-r); dx <= Math.ceil(r); dx++) {
          var px = x + dx, py = y + dy;
          if (px >= 0 && py >= 0 && px < w && py < h && dx * dx + dy * dy <= r2) { this.labelMap[py * w + px] = value; }
        }
      }
    }

    _line(a, b, value) {
      var n = Math.max(Math.abs(b.x - a.x), Math.abs(b.y - a.y), 1);
      for (var i = 0; i <= n; i++) { this._dab(Math.round(a.x + (b.x - a.x) * i / n), Math.round(a.y + (b.y - a.y) * i / n), value); }
    }

    fill(x, y, value) {
      var w = this.width, h = this.height, map = this.labelMap, target = map[y * w + x];
      if (target === value) { return; }
      var stack = [y * w + x];
      while (stack.length) {
        var p = stack.pop();
        if (map[p] !== target) { continue; }
        map[p] = value;
        var px = p % w, py = (p - px) / w;
        if (px > 0) { stack.push(p - 1); } if (px < w - 1) { stack.push(p + 1); }
        if (py > 0) { stack.push(p - w); } if (py < h - 1) { stack.push(p + w); }
      }
    }

    _bind() {
      var self = this, view = this._view, drag = null, space = false;
      window.segqaWindowLevel.attachDrag(view, function () { return self.windowLevel; },
                                         function (s) { self.setWindowLevel(s); });
      view.addEventListener("pointerdown", function (ev) {
        view.setPointerCapture(ev.pointerId);
        if (ev.button === 1 || space) { drag = { pan: true, x: ev.clientX, y: ev.clientY }; return; }
        var p = self.imagePoint(ev.clientX, ev.clientY);
        if (!p.inside) { return; }
        self._snapshot();
        if (self.tool === "fill") { self.fill(p.x, p.y, self.current); self._render(); return; }
        drag = { pan: false, last: p, value: self.tool === "eraser" ? 0 : self.current };
        self._dab(p.x, p.y, drag.value);
        self._render();
      });
      view.addEventListener("pointermove", function (ev) {
        var p = self.imagePoint(ev.clientX, ev.clientY);
        if (p.inside) {
          var v = self.labelMap[p.y * self.width + p.x];
          self._say("x " + p.x + ", y " + p.y + " \u00b7 intensity " + self.grey[p.y * self.width + p.x] + " \u00b7 " +
                    (v ? self.labelNames[v - 1].replace(/_/g, " ") : "background") + " \u00b7 " + self.tool + " " + self.size + " px");
        }
        if (!drag) { return; }
        if (drag.pan) {
          self.panX += ev.clientX - drag.x; self.panY += ev.clientY - drag.y; drag.x = ev.clientX; drag.y = ev.clientY;
          self._render();
        } else {
          self._line(drag.last, p, drag.value); drag.last = p; self._render();
        }
      });
      var end = function () { drag = null; };
      view.addEventListener("pointerup", end);
      view.addEventListener("pointercancel", end);
      view.addEventListener("wheel", function (ev) {
        ev.preventDefault();
        var r = view.getBoundingClientRect();
        self.zoomBy(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - r.left, ev.clientY - r.top);
      }, { passive: false });
      document.addEventListener("keydown", function (ev) {
        var t = ev.target;
        if (t && t !== document.body && t !== self && /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)) { return; }
        var k = ev.key;
        if ((ev.ctrlKey || ev.metaKey) && (k === "z" || k === "Z")) { ev.preventDefault(); if (ev.shiftKey) { self.redo(); } else { self.undo(); } return; }
        if ((ev.ctrlKey || ev.metaKey) && (k === "y" || k === "Y")) { ev.preventDefault(); self.redo(); return; }
        if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
        if (/^[1-9]$/.test(k)) { self.selectClass(+k); }
        else if (k === "b" || k === "B") { self.selectTool("brush"); }
        else if (k === "e" || k === "E") { self.selectTool("eraser"); }
        else if (k === "f" || k === "F") { self.selectTool("fill"); }
        else if (k === "[") { self.size = Math.max(1, self.size - 1); self._syncBar(); }
        else if (k === "]") { self.size = Math.min(40, self.size + 1); self._syncBar(); }
        else if (k === "m" || k === "M") { self.toggleMask(); }
        else if (k === "w" || k === "W") { self._autoWindow(); }
        else if (k === "+" || k === "=") { self.zoomBy(1.25); } else if (k === "-") { self.zoomBy(0.8); }
        else if (k === "0") { self._fit(); }
        else if (k === " ") { space = true; ev.preventDefault(); return; }
        else { return; }
      });
      document.addEventListener("keyup", function (ev) { if (ev.key === " ") { space = false; } });
      window.addEventListener("resize", function () { self._render(); });
    }

    _render() {
      if (!this.grey) { return; }
      var w = this.width, h = this.height;
      if (!this._frame) { this._frame = document.createElement("canvas"); this._frame.width = w; this._frame.height = h; }
      var g = this._frame.getContext("2d"), img = g.createImageData(w, h), d = img.data;
      var table = this._lut || window.segqaWindowLevel.lut(this.windowLevel), a = this.maskVisible ? this.opacity : 0;
      for (var i = 0; i < w * h; i++) {
        var v = table[this.grey[i]], r = v, gg = v, b = v, lab = this.labelMap[i];
        if (lab && a > 0) { var c = this.rgb[lab - 1]; r = v + (c[0] - v) * a; gg = v + (c[1] - v) * a; b = v + (c[2] - v) * a; }
        d[4 * i] = r; d[4 * i + 1] = gg; d[4 * i + 2] = b; d[4 * i + 3] = 255;
      }
      g.putImageData(img, 0, 0);
      var cv = this._canvas, vw = this._view.clientWidth, vh = this._view.clientHeight;
      if (cv.width !== vw || cv.height !== vh) { cv.width = vw; cv.height = vh; }
      var ctx = cv.getContext("2d");
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, vw, vh);
      ctx.imageSmoothingEnabled = false;
      ctx.setTransform(this.zoom, 0, 0, this.zoom, this.panX, this.panY);
      ctx.drawImage(this._frame, 0, 0);
    }

    /** The label map as an RGBA PNG in the label colours (background transparent), base64 without prefix. */
    pngBase64() {
      var c = document.createElement("canvas");
      c.width = this.width; c.height = this.height;
      var g = c.getContext("2d"), img = g.createImageData(this.width, this.height), d = img.data;
      for (var i = 0; i < this.labelMap.length; i++) {
        var lab = this.labelMap[i];
        if (lab) { var col = this.rgb[lab - 1]; d[4 * i] = col[0]; d[4 * i + 1] = col[1]; d[4 * i + 2] = col[2]; d[4 * i + 3] = 255; }
      }
      g.putImageData(img, 0, 0);
      return c.toDataURL("image/png").split(",", 2)[1];
    }

    get modified() {
      for (var i = 0; i < this.labelMap.length; i++) { if (this.labelMap[i] !== this.initialMap[i]) { return true; } }
      return false;
    }

    /** The element's output, as Ground Truth's crowd-semantic-segmentation submits it. */
    get value() {
      if (!this.ready) { return null; }
      var mappings = {}, self = this;
      this.labelNames.forEach(function (name, k) { mappings[name] = { color: self.colours[k] }; });
      return { labeledImage: { pngImageData: this.pngBase64() }, labelMappings: mappings,
               initialValueModified: this.modified, inputImageProperties: { height: this.height, width: this.width } };
    }

    validate() {
      if (!this.ready) { this._say("The image is still loading."); return false; }
      return true;
    }
  }

  customElements.define("crowd-form", CrowdForm);
  customElements.define("crowd-button", CrowdButton);
  customElements.define("crowd-card", CrowdCard);
  customElements.define("crowd-checkbox", CrowdCheckbox);
  customElements.define("crowd-radio-button", CrowdRadioButton);
  customElements.define("crowd-radio-group", CrowdRadioGroup);
  customElements.define("crowd-input", CrowdInput);
  customElements.define("crowd-text-area", CrowdTextArea);
  customElements.define("crowd-alert", CrowdAlert);
  customElements.define("crowd-instructions", CrowdInstructions);
  customElements.define("crowd-semantic-segmentation", CrowdSemanticSegmentation);
})();

// The portal's own keyboard shortcuts and the task timer. Loaded on every portal page (deferred).
(function () {
  "use strict";

  function typing(ev) {
    var t = ev.target;
    var tag = (t && t.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || (t && t.isContentEditable) ||
      tag === "crowd-input" || tag === "crowd-text-area";
  }

  document.addEventListener("keydown", function (ev) {
    var form = document.querySelector("crowd-form");
    // Ctrl/Cmd+Enter submits the task from anywhere on the page.
    if (form && ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      form.submit();
      return;
    }
    if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    // "?" opens the template's instructions.
    if (ev.key === "?") {
      var instructions = document.querySelector("crowd-instructions");
      if (instructions && typeof instructions.open === "function") { ev.preventDefault(); instructions.open(); }
      return;
    }
    // On the home page, Enter (or N) starts or continues the next batch even when focus wandered.
    var next = document.getElementById("portal-next");
    if (next && !form && (ev.key === "n" || ev.key === "N" || (ev.key === "Enter" && document.activeElement === document.body))) {
      ev.preventDefault();
      next.click();
    }
  });

  // Countdown of the task's time limit (server-side seconds left when the page was made).
  var timer = document.getElementById("portal-timer");
  if (timer) {
    var deadline = Date.now() + 1000 * Number(timer.getAttribute("data-seconds-left") || 0);
    var tick = function () {
      var left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      timer.textContent = "Time left " + (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s).padStart(2, "0");
      timer.classList.toggle("portal-late", left < 120);
      if (left > 0) { setTimeout(tick, 1000); }
    };
    tick();
  }

  // Giving a task back cannot be undone: ask first.
  var release = document.getElementById("portal-release");
  if (release) {
    release.addEventListener("submit", function (ev) {
      if (!window.confirm("Give this batch back? You will not be given it again.")) { ev.preventDefault(); }
    });
  }
})();

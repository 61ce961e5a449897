/*
 * segqa time on task: the one definition, shared by the verify screen (templates/mask_review.liquid.html) and
 * the adjust editor (templates/mask_adjust.liquid.html); templates.expand_includes puts it inline in both, for
 * Ground Truth (which reports no time of its own) and the portal. Visible time from the page being shown to the
 * submit: time the tab was hidden does not count.
 */
function segqaTimeOnTask() {
  "use strict";
  var shownAt = document.hidden ? null : Date.now();
  var visibleMs = 0;
  document.addEventListener("visibilitychange", function () {
    if (document.hidden && shownAt !== null) { visibleMs += Date.now() - shownAt; shownAt = null; }
    else if (!document.hidden && shownAt === null) { shownAt = Date.now(); }
  });
  return {
    /** Seconds on task so far, as the form field carries them ("12.3"). */
    seconds: function () {
      return ((visibleMs + (shownAt !== null ? Date.now() - shownAt : 0)) / 1000).toFixed(1);
    }
  };
}

// Keyboard shortcuts (the list: press ?). A key clicks the page's element marked
// data-shortcut="<key>" (the batch page's Pause, Cancel, Retry failed; the operation page's next
// and previous failed; New batch), so what it does and any question it asks first are the
// element's own. Keys typed into a field are the field's.
(function () {
  var pending = "";
  function typing(target) {
    return target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName);
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var key = event.key;
    var dialog = document.getElementById("shortcuts");
    if (pending === "g") {
      pending = "";
      var go = { h: "/batches/", d: "/" }[key];
      if (go) { event.preventDefault(); window.location.assign(go); }
      return;
    }
    if (key === "?") {
      if (dialog && !dialog.open) { event.preventDefault(); dialog.showModal(); }
      return;
    }
    if (dialog && dialog.open) return;
    if (key === "g") { pending = "g"; return; }
    if (key === "/") {
      var box = document.querySelector("main input[type=search], main .filters input, main input[type=text]") ||
        document.querySelector(".topbar-search input");
      if (box) { event.preventDefault(); box.focus(); }
      return;
    }
    var target = document.querySelector('[data-shortcut="' + key + '"]');
    if (target) { event.preventDefault(); target.click(); }
  });
})();

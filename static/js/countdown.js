// The deadline countdowns of the batch page ([data-deadline]: an ISO time): redrawn every second in
// the browser, no request to the server. The live updates replace the element; the next tick finds it.
(function () {
  // As the `seconds` template filter writes it: 42 s, 3 min 5 s, 2 h 4 min.
  function format(seconds) {
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60), rest = seconds % 60;
    if (minutes < 60) return minutes + " min" + (rest ? " " + rest + " s" : "");
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    return hours + " h" + (minutes ? " " + minutes + " min" : "");
  }
  function tick() {
    document.querySelectorAll("[data-deadline]").forEach(function (element) {
      var left = Math.max(0, Math.round((Date.parse(element.dataset.deadline) - Date.now()) / 1000));
      element.textContent = format(left);
    });
  }
  setInterval(tick, 1000);
  tick();
})();

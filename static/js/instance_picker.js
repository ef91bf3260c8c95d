// The create form's instance picker: filter the list as you type, select all shown, count.
(function () {
  function setUp(picker) {
    var filter = picker.querySelector("[data-picker-filter]");
    var count = picker.querySelector("[data-picker-count]");
    var rows = Array.prototype.slice.call(picker.querySelectorAll("label.pick"));
    function shown() { return rows.filter(function (row) { return !row.hidden; }); }
    function recount() {
      var selected = rows.filter(function (row) { return row.querySelector("input").checked; }).length;
      count.textContent = selected + " selected, " + shown().length + " shown of " + rows.length;
    }
    filter.addEventListener("input", function () {
      var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      rows.forEach(function (row) {
        var text = row.getAttribute("data-search").toLowerCase();
        row.hidden = !words.every(function (word) { return text.indexOf(word) !== -1; });
      });
      recount();
    });
    picker.querySelector("[data-picker-all]").addEventListener("click", function () {
      shown().forEach(function (row) { row.querySelector("input").checked = true; });
      recount();
    });
    picker.querySelector("[data-picker-none]").addEventListener("click", function () {
      rows.forEach(function (row) { row.querySelector("input").checked = false; });
      recount();
    });
    picker.addEventListener("change", recount);
    recount();
  }
  document.querySelectorAll("[data-instance-picker]").forEach(setUp);
})();

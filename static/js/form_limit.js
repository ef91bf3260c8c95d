// A form whose typed text is larger than the server accepts in one request (html[data-max-body],
// bytes) is not sent: the server could not read it and the text would be lost. A message in the
// form says so and names the limit; what was typed stays. Files do not count: they are uploaded
// apart from the form's text.
(function () {
  var limit = parseInt(document.documentElement.dataset.maxBody || "0", 10);
  if (!limit) return;
  function textBytes(form) {
    var total = 0;
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name || field.disabled || field.type === "file") return;
      if ((field.type === "checkbox" || field.type === "radio") && !field.checked) return;
      total += new Blob([field.name + "=" + (field.value || "")]).size + 1;
    });
    return total;
  }
  function mib(bytes) {
    return (bytes / 1024 / 1024).toFixed(1) + " MiB";
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || (form.method || "").toLowerCase() !== "post") return;
    var size = textBytes(form);
    var shown = form.querySelector("[data-form-limit]");
    if (size <= limit) {
      if (shown) shown.remove();
      return;
    }
    event.preventDefault();
    if (!shown) {
      shown = document.createElement("p");
      shown.className = "error";
      shown.setAttribute("role", "alert");
      shown.setAttribute("data-form-limit", "");
      form.insertBefore(shown, form.firstChild);
    }
    shown.textContent = "This form holds " + mib(size) + " of text, more than the limit of " + mib(limit) +
      " (" + limit.toLocaleString("en") + " bytes) for one request: nothing was sent. Upload the items as a file, or split them.";
  }, true);
})();

// Live updates that keep the reader's place. The server sends a whole block (a batch's live card,
// an operation's live block) at every event; replacing it outright moved keyboard focus to the
// page's start and closed open <details> several times a second. For a target marked
// [data-morph], only what differs is changed: equal elements stay the same nodes (so a focused
// button keeps focus), text and attributes are updated in place, and an element whose htmx
// attributes changed is replaced and processed again (htmx binds its request when it processes).
(function () {
  "use strict";

  function key(node) {
    if (node.nodeType !== Node.ELEMENT_NODE) return null;
    return node.id || node.getAttribute("data-part") || null;
  }

  function htmxAttributes(element) {
    var found = [];
    for (var index = 0; index < element.attributes.length; index++) {
      var name = element.attributes[index].name;
      // hx-confirm is read when the button is pressed: a new count in it needs no new binding.
      if (name === "hx-confirm") continue;
      if (name.indexOf("hx-") === 0 || name.indexOf("ws-") === 0) found.push(name + "=" + element.attributes[index].value);
    }
    return found.sort().join("\n");
  }

  function syncAttributes(element, next) {
    var index;
    for (index = element.attributes.length - 1; index >= 0; index--) {
      var name = element.attributes[index].name;
      // An open <details> is the reader's choice, not the server's.
      if (name === "open" && element.tagName === "DETAILS") continue;
      if (!next.hasAttribute(name)) element.removeAttribute(name);
    }
    for (index = 0; index < next.attributes.length; index++) {
      var attribute = next.attributes[index];
      if (attribute.name === "open" && element.tagName === "DETAILS") continue;
      if (element.getAttribute(attribute.name) !== attribute.value) element.setAttribute(attribute.name, attribute.value);
    }
  }

  function replace(node, next) {
    node.replaceWith(next);
    if (next.nodeType === Node.ELEMENT_NODE && window.htmx) window.htmx.process(next);
  }

  function compatible(node, next) {
    if (node.nodeType !== next.nodeType) return false;
    if (node.nodeType !== Node.ELEMENT_NODE) return true;
    return node.tagName === next.tagName && key(node) === key(next) && htmxAttributes(node) === htmxAttributes(next);
  }

  function morph(node, next) {
    if (node.isEqualNode(next)) return;
    if (!compatible(node, next)) {
      replace(node, next);
      return;
    }
    if (node.nodeType !== Node.ELEMENT_NODE) {
      if (node.nodeValue !== next.nodeValue) node.nodeValue = next.nodeValue;
      return;
    }
    syncAttributes(node, next);
    morphChildren(node, next);
  }

  // The first unkeyed node from `cursor` on that looks like `next` (same tag and class): a block
  // that appeared or left before it must not make every later sibling be replaced.
  function similarAhead(cursor, next) {
    for (var node = cursor; node; node = node.nextSibling) {
      if (key(node) || node.nodeType !== next.nodeType) continue;
      if (node.nodeType !== Node.ELEMENT_NODE) return node;
      if (node.tagName === next.tagName && node.className === next.className) return node;
    }
    return null;
  }

  function morphChildren(parent, nextParent) {
    var keyed = {};
    Array.prototype.forEach.call(parent.childNodes, function (child) {
      var name = key(child);
      if (name) keyed[name] = child;
    });
    var cursor = parent.firstChild;
    var incoming = Array.prototype.slice.call(nextParent.childNodes);
    incoming.forEach(function (next) {
      var name = key(next);
      var match = null;
      if (name && keyed[name]) {
        match = keyed[name];
        delete keyed[name];
      } else if (!name) {
        match = similarAhead(cursor, next);
      }
      if (match) {
        if (match !== cursor && !key(match)) {
          while (cursor && cursor !== match) {
            var gone = cursor;
            cursor = cursor.nextSibling;
            if (!key(gone)) parent.removeChild(gone);
          }
        } else if (match !== cursor) parent.insertBefore(match, cursor);
        cursor = match.nextSibling;
        morph(match, next);
      } else {
        parent.insertBefore(next, cursor);
        if (next.nodeType === Node.ELEMENT_NODE && window.htmx) window.htmx.process(next);
      }
    });
    while (cursor) {
      var rest = cursor.nextSibling;
      parent.removeChild(cursor);
      cursor = rest;
    }
    Object.keys(keyed).forEach(function (name) {
      if (keyed[name].parentNode === parent) parent.removeChild(keyed[name]);
    });
  }

  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail.target;
    var fragment = event.detail.fragment;
    var next = fragment && fragment.firstElementChild;
    if (!target || !target.hasAttribute || !target.hasAttribute("data-morph")) return;
    if (!next || next.id !== target.id || next.tagName !== target.tagName) return;
    event.detail.shouldSwap = false;
    var focused = document.activeElement;
    var focusedPost = focused && target.contains(focused) ? focused.getAttribute("hx-post") : null;
    morph(target, next);
    // A button that came back as a new node (its status changed) gets focus again when the new
    // block has the same action.
    if (focusedPost && !document.body.contains(focused)) {
      var again = target.querySelector('[hx-post="' + CSS.escape(focusedPost) + '"]');
      if (again) again.focus();
    }
  });
})();

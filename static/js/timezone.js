// The server shows times in the zone this browser names (cookie batchsite_tz, read by
// ViewerTimezoneMiddleware); it is set, or corrected after travel, for the next page.
(function () {
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (error) {
    return;
  }
  if (!zone) return;
  var current = (document.cookie.match(/(?:^|; )batchsite_tz=([^;]*)/) || [])[1];
  if (current && decodeURIComponent(current) === zone) return;
  document.cookie = "batchsite_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; SameSite=Lax";
})();

ruleset io.picolabs.cookies {
  meta {
    name "Cookies"
    description <<
      The cookies an HTTP request carried, as a map. pico-engine 1.x gives a
      module no current event, so the caller passes the request's headers:
      cookies:cookies(event:attr("_headers")). Written for p2pico.
    >>
    author "p2pico"
    provides cookies
  }

  global {
    // {name: value} from a Cookie header ("a=1; b=2"); a later duplicate wins.
    cookies = function(headers) {
      raw = headers{"cookie"}.defaultsTo("").as("String");
      raw.split(re#;\s*#).reduce(function(found, pair) {
        kv = pair.extract(re#^([^=]+)=(.*)$#);
        kv.length() == 2 => found.put(kv[0].trim(), kv[1].trim()) | found
      }, {})
    }
  }
}

ruleset OpenWest2018.keys {
  meta {
    name "OpenWest 2018 game: keys"
    description <<
      The game pico's pins and tags. A pin is a four-digit number; a tag is the
      15-digit number whose last four digits are the pin and whose first eleven
      come from a keyed hash of the pin (the key is made when the ruleset is
      installed and never leaves this pico), so tags cannot be guessed.
      Written for p2pico from the description of the 2018 game.
    >>
    author "p2pico"
    use module io.picolabs.wrangler alias wrangler
    provides tag_id, as_pin, valid
    shares issued, current_pin
  }

  global {
    // Only the kiosk's channel may ask for the next tag: it lets ids:need_next
    // in and this module's `issued` out, nothing else.
    kiosk_events = {"allow": [{"domain": "ids", "name": "need_next"}], "deny": []}
    kiosk_queries = {"allow": [{"rid": meta:rid, "name": "issued"}], "deny": []}

    pad11 = function(n) {
      s = "00000000000" + n.as("String");
      s.substr(s.length() - 11)
    }

    // The one valid 15-digit tag that ends with this pin (a four-digit String).
    tag_id = function(pin) {
      digest = math:hmac("sha256", ent:secret, "OpenWest2018 pin " + pin);
      pad11(("0x" + digest.substr(17, 9)).as("Number")) + pin
    }

    as_pin = function(id) {
      id.substr(11)
    }

    valid = function(id) {
      id.typeof() == "String" && id.match(re#^\d{15}$#) && tag_id(as_pin(id)) == id
    }

    current_pin = function() {
      ent:current_pin
    }

    // The last tag handed out on the channel asking, with the sign-up URL to show.
    issued = function() {
      ent:issued{meta:eci}
    }
  }

  rule initialization {
    select when wrangler ruleset_installed where event:attr("rids") >< meta:rid
    if ent:current_pin.isnull() then
      ctx:newChannel(["kiosk"], kiosk_events, kiosk_queries) setting(channel)
    fired {
      ent:current_pin := 1000
      ent:secret := random:uuid() + random:uuid()
      ent:kiosk_eci := channel{"id"}
      ent:issued := {}
    }
  }

  rule start_ids {
    select when ids starting_pin
      ord re#^(\d{4})$#
      setting(ord)
    fired {
      ent:current_pin := ord.as("Number")
    }
  }

  // Only from the kiosk's channel: nobody else can mint sign-up tags (in 2018 the
  // request's HTTP headers were checked; on a mesh the channel says who asks).
  rule next {
    select when ids need_next
    pre {
      ok = meta:eci == ent:kiosk_eci && ent:current_pin < 10000
      id = tag_id(ent:current_pin.as("String"))
      signup_eci = wrangler:channels("sign-up").head(){"id"}
      url = "/sky/event/" + signup_eci + "/none/tag/scanned?id=" + id
    }
    if ok then
      send_directive("next", {"id": id, "url": url})
    fired {
      ent:current_pin := ent:current_pin + 1
      ent:issued{meta:eci} := {"id": id, "url": url}
    }
  }

  rule avoid_reuse {
    select when ids id_used
    pre {
      pin = as_pin(event:attr("id")).as("Number")
    }
    if pin >= ent:current_pin then noop()
    fired {
      ent:current_pin := pin + 1
    }
  }
}

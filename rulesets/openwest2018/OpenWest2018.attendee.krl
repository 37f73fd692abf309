ruleset OpenWest2018.attendee {
  meta {
    name "OpenWest 2018 game: attendee"
    description <<
      An owner pico in the game. Its intro channel is what its owner's QR code
      names: a phone scanning it (tag:scanned) connects its own owner pico with
      this one by a subscription (auto-accepted on the other side), or, for a
      phone not yet in the game, leaves a pending connection that vests when
      that phone signs up. Each new connection is reported to the collection
      pico as a signed count. Written for p2pico.
    >>
    author "p2pico"
    use module io.picolabs.wrangler alias wrangler
    use module io.picolabs.subscription alias subs
    use module io.picolabs.cookies alias cookies
    provides about, contacts, signed_count, inbox
    shares about, contacts, signed_count, inbox
  }

  global {
    intro_events = {"allow": [{"domain": "tag", "name": "scanned"}], "deny": []}
    intro_queries = {"allow": [{"rid": "OpenWest2018.attendee.ui", "name": "*"}], "deny": []}
    more_rids = ["OpenWest2018.attendee.ui", "OpenWest2018.contact_info", "OpenWest2018.export"]

    contacts = function() { ent:contacts.defaultsTo({}) }
    inbox = function() { ent:inbox.defaultsTo([]) }

    about = function() {
      {"pin": ent:pin, "initials": ent:initials, "tagline": ent:tagline,
       "intro": ent:intro_eci, "did": meta:picoId, "connections": contacts().keys().length(),
       "signed_up": not ent:initials.isnull()}
    }

    collection_bus = function() {
      subs:established("Tx_role", "collection").head()
    }

    // My connection count, signed with the key the collection pico gave me.
    signed_count = function() {
      count = contacts().keys().length();
      ent:signing_key.isnull() => null
        | {"pin": ent:pin, "count": count,
           "signature": math:hmac("sha256", ent:signing_key,
                                  "OpenWest2018 count " + ent:pin + " " + count)}
    }

    page_url = function(name, other) {
      "/sky/cloud/" + ent:intro_eci + "/OpenWest2018.attendee.ui/page.html?name=" + name
        + (other => "&with=" + other | "")
    }
  }

  // -- becoming an owner pico ---------------------------------------------------

  rule initialization {
    select when wrangler ruleset_installed where event:attr("rids") >< meta:rid
    if ent:pin.isnull() then noop()
    fired {
      ent:pin := event:attr("pin")
      ent:contacts := {}
      ent:requested := {}
      raise wrangler event "new_channel_request" attributes {
        "tags": ["intro"], "eventPolicy": intro_events, "queryPolicy": intro_queries,
        "collection_wellKnown": event:attr("collection_wellKnown")
      }
      raise attendee event "install_more" attributes {"absoluteURL": meta:rulesetURI}
    }
  }

  rule install_more {
    select when attendee install_more
    foreach more_rids setting(rid)
    fired {
      raise wrangler event "install_ruleset_request"
        attributes {"absoluteURL": event:attr("absoluteURL"), "rid": rid}
    }
  }

  rule record_intro_channel {
    select when wrangler channel_created where event:attr("channel"){"tags"} >< "intro"
    pre {
      intro = event:attr("channel"){"id"}
    }
    fired {
      ent:intro_eci := intro
      raise wrangler event "subscription" attributes {
        "wellKnown_Tx": event:attr("collection_wellKnown"),
        "Rx_role": "member", "Tx_role": "collection", "name": "OpenWest2018",
        "pin": ent:pin, "intro": intro, "wellKnown": subs:wellKnown_Rx(){"id"},
        "did": meta:picoId
      }
    }
  }

  rule record_signing_key {
    select when collection signing_key
      key re#^(.+)$#
      setting(key)
    if meta:eci == collection_bus(){"Rx"} then noop()
    fired {
      ent:signing_key := key
      raise attendee event "report_needed"
    }
  }

  rule signup_complete {
    select when about_me signup_complete
    if meta:eci == collection_bus(){"Rx"} then noop()
    fired {
      ent:initials := event:attr("initials")
      ent:tagline := event:attr("tagline")
      raise contact_info event "updated" attributes {"name": event:attr("initials")}
      raise attendee event "pending_connections" attributes {"pending": event:attr("pending")}
    }
  }

  // The phone scanned these intro codes before it had a pico: scan them again,
  // now as this pico, so the connections vest.
  rule handle_pending_connections {
    select when attendee pending_connections
    foreach event:attr("pending").defaultsTo([]) setting(intro)
    if intro != ent:intro_eci then
      event:send({"eci": intro, "domain": "tag", "type": "scanned", "attrs": {"whoami": ent:pin}})
  }

  // -- my intro code was scanned --------------------------------------------------

  rule identify_scanner {
    select when tag scanned
    pre {
      whoami = cookies:cookies(event:attr("_headers")){"whoami"} || event:attr("whoami")
    }
    always {
      ent:scanner := whoami.defaultsTo("").as("String")
    }
  }

  // A phone not in the game yet: remember my intro channel on it, for later.
  rule handle_unknown {
    select when tag scanned
    pre {
      before = cookies:cookies(event:attr("_headers")){"pending"}.defaultsTo("")
      list = before.split(re#\.#)
        .filter(function(e) { e.match(re#^[A-Za-z0-9_-]+$#) && e != ent:intro_eci })
      pending = list.append(ent:intro_eci).join(".")
    }
    if ent:scanner == "" then every {
      send_directive("_cookie", {"cookie": "pending=" + pending + "; Path=/"})
      send_directive("_redirect", {"url": page_url("pending", null)})
    }
    fired { last }
  }

  rule avoid_self {
    select when tag scanned
    if ent:scanner == ent:pin then
      send_directive("_redirect", {"url": page_url("self", null)})
    fired { last }
  }

  rule avoid_dup {
    select when tag scanned
    if contacts() >< ent:scanner || ent:requested >< ent:scanner then
      send_directive("_redirect", {"url": page_url("already", ent:scanner)})
    fired { last }
  }

  rule make_connection {
    select when tag scanned
    pre {
      scanner = ent:scanner
      wellKnown = wrangler:picoQuery(collection_bus(){"Tx"}, "OpenWest2018.collection",
        "wellKnown_of", {"pin": scanner})
    }
    if wellKnown then
      send_directive("_redirect", {"url": page_url("connected", scanner)})
    fired {
      ent:requested{scanner} := true
      raise wrangler event "subscription" attributes {
        "wellKnown_Tx": wellKnown, "Rx_role": "contact", "Tx_role": "contact",
        "name": "connection", "scanned_pin": ent:pin, "scanner_pin": scanner
      }
    } else {
      raise attendee event "unknown_scanner" attributes {"pin": scanner}
    }
  }

  rule unknown_scanner {
    select when attendee unknown_scanner
    send_directive("_redirect", {"url": page_url("unknown", null)})
  }

  // -- the connection: a subscription between two owner picos --------------------

  rule auto_accept {
    select when wrangler inbound_pending_subscription_added
      Rx_role re#^(contact)$#
      setting(role)
    pre {
      other = event:attr("scanned_pin")
      ok = event:attr("scanner_pin") == ent:pin && not (contacts() >< other)
    }
    if ok then noop()
    fired {
      raise wrangler event "pending_subscription_approval" attributes event:attrs
    } else {
      raise wrangler event "inbound_rejection" attributes event:attrs
    }
  }

  rule record_new_contact_pin {
    select when wrangler subscription_added
      Rx_role re#^(contact)$#
      setting(role)
    pre {
      bus = event:attr("bus")
      other = event:attr("scanned_pin") == ent:pin => event:attr("scanner_pin")
        | event:attr("scanned_pin")
    }
    fired {
      ent:contacts{other} := {"Id": bus{"Id"}, "Rx": bus{"Rx"}, "Tx": bus{"Tx"}, "since": time:now()}
      clear ent:requested{other}
      raise attendee event "report_needed"
    }
  }

  rule report_connection_count {
    select when attendee report_needed
    pre {
      signed = signed_count()
    }
    if signed then
      event:send({"eci": collection_bus(){"Tx"}, "domain": "attendee", "type": "new_connection",
        "attrs": {"count": signed{"count"}, "signed": signed}})
  }

  // -- talking to my connections ----------------------------------------------------

  rule say_to_contacts {
    select when attendee say
    foreach contacts() setting(contact, pin)
    event:send({"eci": contact{"Tx"}, "domain": "contact", "type": "message",
      "attrs": {"text": event:attr("text"), "from": ent:pin}})
  }

  rule hear_from_contact {
    select when contact message
    pre {
      from = contacts().filter(function(c) { c{"Rx"} == meta:eci }).keys().head()
    }
    if from then noop()
    fired {
      ent:inbox := inbox().append({"from": from, "text": event:attr("text")})
    }
  }
}

ruleset OpenWest2018.tags {
  meta {
    name "OpenWest 2018 game: tags"
    description <<
      The game pico's side of signing up: a scanned sign-up tag makes an owner
      pico (through the root pico), sets the phone's whoami cookie, and records
      the initials and tag-line; a phone that lost its cookies recovers them.
      Written for p2pico from the description of the 2018 game.
    >>
    author "p2pico"
    use module OpenWest2018.keys alias ids
    use module io.picolabs.wrangler alias wrangler
    use module io.picolabs.cookies alias cookies
    provides attendees_eci, owner, pending_of
    shares owners, need_initials, attendees_eci, attendees
  }

  global {
    // The sign-up channel: what a phone may do with the game pico.
    signup_events = {
      "allow": [
        {"domain": "tag", "name": "scanned"},
        {"domain": "tag", "name": "initials_provided"},
        {"domain": "tag", "name": "recovery_codes_provided"}
      ],
      "deny": []
    }
    signup_queries = {"allow": [{"rid": "OpenWest2018.ui", "name": "page"}], "deny": []}

    // What a new owner pico gets, and where the collection pico's rulesets are.
    owner_rids = ["io.picolabs.cookies", "OpenWest2018.attendee"]

    owners = function() { ent:owners }
    need_initials = function() { ent:need_initials }
    attendees_eci = function() { ent:attendees_eci }
    attendees = function() { ent:attendees.defaultsTo({}).put("eci", ent:attendees_eci) }
    owner = function(id) { ent:owners{id} }

    // The intro channels a phone scanned before it signed up (its pending cookie).
    pending_of = function(headers) {
      cookies:cookies(headers){"pending"}.defaultsTo("").split(re#\.#)
        .filter(function(eci) { eci.match(re#^[A-Za-z0-9_-]+$#) })
    }

    same_text = function(a, b) {
      a.defaultsTo("").as("String").trim().lc() == b.defaultsTo("").as("String").trim().lc()
    }
  }

  rule initialization {
    select when wrangler ruleset_installed where event:attr("rids") >< meta:rid
    if ent:owners.isnull() then
      ctx:newChannel(["sign-up"], signup_events, signup_queries)
    fired {
      ent:owners := {}
      ent:need_initials := []
      raise wrangler event "new_child_request"
        attributes {"name": "Attendees", "backgroundColor": "#93c47d"}
    }
  }

  // The collection pico ("Attendees") is this pico's only child.
  rule attendees_created {
    select when wrangler child_initialized where event:attr("name") == "Attendees"
    pre {
      eci = event:attr("eci")
    }
    every {
      event:send({"eci": eci, "domain": "wrangler", "type": "install_ruleset_request",
        "attrs": {"absoluteURL": meta:rulesetURI, "rid": "OpenWest2018.collection"}})
      event:send({"eci": eci, "domain": "wrangler", "type": "install_ruleset_request",
        "attrs": {"absoluteURL": meta:rulesetURI, "rid": "OpenWest2018.collection.ui"}})
    }
    fired {
      ent:attendees_eci := eci
    }
  }

  rule attendees_ready {
    select when attendees ready
    fired {
      ent:attendees_wellKnown := event:attr("wellKnown")
      ent:attendees := {"wellKnown": event:attr("wellKnown"), "did": event:attr("did"),
                        "leaderboard": event:attr("leaderboard")}
    }
  }

  // -- tag:scanned, in order: the first rule that handles it says `last` --------

  rule reject_invalid_tag {
    select when tag scanned
    pre {
      candidate_id = event:attr("id")
      ok = candidate_id.typeof() == "String"
        && candidate_id.length() == 15
        && ids:valid(candidate_id)
    }
    if not ok then
      send_directive("invalid tag", {"id": candidate_id, "page": "reject"})
    fired {
      raise tag event "invalid_tag" attributes {"id": candidate_id}
      last
    }
  }

  rule tag_first_scan {
    select when tag scanned id re#^(\d{15})$# setting(id)
    pre {
      pin = ids:as_pin(id)
    }
    if not (ent:owners >< id) then every {
      send_directive("first scan", {"id": id, "page": "sign-up"})
      event:send({"eci": wrangler:parent_eci(), "domain": "owner", "type": "creation",
        "attrs": {
          "name": pin,
          "backgroundColor": "#cccccc",
          "pin": pin,
          "absoluteURL": meta:rulesetURI,
          "owner_rids": owner_rids,
          "collection_wellKnown": ent:attendees_wellKnown
        }})
    }
    fired {
      ent:owners{id} := {"pin": pin}
      ent:need_initials := ent:need_initials.append(pin)
      raise ids event "id_used" attributes {"id": id}
      raise tag event "first_scan" attributes {"id": id}
      last
    }
  }

  rule scanner_unknown {
    select when tag scanned id re#^(\d{15})$# setting(id)
    pre {
      whoami = cookies:cookies(event:attr("_headers")){"whoami"}
      pin = ids:as_pin(id)
      need_initials = ent:need_initials >< pin
    }
    if whoami.isnull() then
      send_directive("unknown scanner", {"id": id, "page": "recovery"})
    fired {
      raise tag event "recovery_needed" attributes {"id": id} if not need_initials
      raise tag event "still_need_initials" attributes {"id": id} if need_initials
      last
    } else {
      ent:scanned_by := whoami
    }
  }

  rule subsequent_scan {
    select when tag scanned id re#^(\d{15})$# setting(id)
    pre {
      pin = ids:as_pin(id)
      mine = ent:scanned_by == pin
      need_initials = mine && ent:need_initials >< pin
    }
    send_directive("subsequent scan", {"id": id, "page": mine => "welcome" | "taken"})
    fired {
      raise tag event "still_need_initials" attributes {"id": id} if need_initials
      raise tag event "subsequent_scan" attributes {"id": id, "mine": mine} if not need_initials
    }
  }

  // -- initials and tag-line, from the "Enter initials" page ---------------------

  rule record_initials {
    select when tag initials_provided id re#^(\d{15})$# setting(id)
    pre {
      pin = ids:as_pin(id)
      whoami = cookies:cookies(event:attr("_headers")){"whoami"}
      initials = event:attr("initials").defaultsTo("").as("String").trim()
      tagline = event:attr("tagline").defaultsTo("").as("String").trim()
      ok = ent:owners >< id && whoami == pin && initials.length() > 0
        && initials.length() <= 12 && tagline.length() <= 80
    }
    if ok then
      event:send({"eci": ent:attendees_eci, "domain": "attendees", "type": "initials_provided",
        "attrs": {"pin": pin, "initials": initials, "tagline": tagline,
                  "pending": pending_of(event:attr("_headers"))}})
    fired {
      ent:owners{id} := {"pin": pin, "initials": initials, "tagline": tagline}
      ent:need_initials := ent:need_initials.filter(function(p) { p != pin })
      raise tag event "initials_recorded" attributes {"id": id}
    } else {
      raise tag event "initials_refused" attributes {"id": id}
    }
  }

  // -- a phone that lost its cookies, from the "Connection recovery" page --------

  rule check_recovery_codes {
    select when tag recovery_codes_provided id re#^(\d{15})$# setting(id)
    pre {
      known = ent:owners{id}
      ok = not known{"initials"}.isnull()
        && same_text(known{"initials"}, event:attr("initials"))
        && same_text(known{"tagline"}, event:attr("tagline"))
    }
    if ok then noop()
    fired {
      raise tag event "recovery_codes_accepted" attributes {"id": id}
    } else {
      raise tag event "recovery_codes_rejected" attributes {"id": id}
    }
  }
}

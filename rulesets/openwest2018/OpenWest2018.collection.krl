ruleset OpenWest2018.collection {
  meta {
    name "OpenWest 2018 game: the Attendees collection"
    description <<
      The collection pico ("Attendees", the game pico's child): every owner pico
      subscribes to it as a "member". It keeps each member's score from signed
      connection counts (a count whose signature does not verify is refused),
      passes initials and tag-line from the game pico to the owner pico, and
      rolls the scores over to a new day. Written for p2pico.
    >>
    author "p2pico"
    use module io.picolabs.wrangler alias wrangler
    use module io.picolabs.subscription alias subs
    provides member, wellKnown_of, scores, day, old_scores, attendees, members, attacks, winners
    shares member, wellKnown_of, scores, day, old_scores, attendees, members, attacks,
      counts, winners
  }

  global {
    // The leaderboard's channel: its page, and nothing else.
    board_events = {"allow": [], "deny": []}
    board_queries = {"allow": [{"rid": "OpenWest2018.collection.ui", "name": "*"}], "deny": []}

    attendees = function() { ent:attendees.defaultsTo({}) }      // member Tx -> pin
    members = function() { ent:members.defaultsTo({}) }          // pin -> about the member
    member = function(pin) {
      found = members(){pin};
      found.isnull() => null | found.delete("Tx").delete("Id").put("score", scores(){pin})
    }
    wellKnown_of = function(pin) { members(){[pin, "wellKnown"]} }
    counts = function() { ent:counts.defaultsTo({}) }            // pin -> verified count
    old_scores = function() { ent:old_scores.defaultsTo({}) }    // pin -> count at day's end
    scores = function() { ent:scores.defaultsTo({}) }            // pin -> today's points
    day = function() { ent:day.defaultsTo(1) }
    attacks = function() { ent:attacks.defaultsTo([]) }
    winners = function() { ent:winners.defaultsTo([]) }

    // The signature a member's count must carry: HMAC-SHA256 under the key this
    // pico gave that member (and no one else) when it joined.
    signature = function(pin, count) {
      key = ent:keys{pin};
      key.isnull() => null | math:hmac("sha256", key, "OpenWest2018 count " + pin + " " + count)
    }

    verified = function(pin, count, signed) {
      not pin.isnull() && count.typeof() == "Number" && signed.typeof() == "Map"
        && signed{"count"} == count && signed{"pin"} == pin
        && not signature(pin, count).isnull() && signed{"signature"} == signature(pin, count)
    }

    score_of = function(pin, count) {
      count - old_scores(){pin}.defaultsTo(0)
    }
  }

  rule initialization {
    select when wrangler ruleset_installed where event:attr("rids") >< meta:rid
    if ent:members.isnull() then
      ctx:newChannel(["leaderboard"], board_events, board_queries)
    fired {
      ent:members := {}
      ent:attendees := {}
      ent:keys := {}
      ent:counts := {}
      ent:scores := {}
      ent:old_scores := {}
      ent:waiting := {}
      ent:day := 1
      raise attendees event "announce"
    }
  }

  rule announce {
    select when attendees announce
    event:send({"eci": wrangler:parent_eci(), "domain": "attendees", "type": "ready",
      "attrs": {"wellKnown": subs:wellKnown_Rx(){"id"}, "did": meta:picoId,
                "leaderboard": wrangler:channels("leaderboard").head(){"id"}}})
  }

  // Owner picos ask to be members; they are accepted at once.
  rule auto_accept_member {
    select when wrangler inbound_pending_subscription_added
      Rx_role re#^collection$#
      pin re#^(\d{4})$#
    fired {
      raise wrangler event "pending_subscription_approval" attributes event:attrs
    }
  }

  rule member_subscribed {
    select when wrangler subscription_added
      Rx_role re#^(collection)$#
      pin re#^(\d{4})$#
      setting(role, pin)
    pre {
      bus = event:attr("bus")
    }
    fired {
      raise collection event "new_member" attributes {
        "Tx": bus{"Tx"}, "Id": bus{"Id"}, "name": pin,
        "intro": event:attr("intro"), "wellKnown": event:attr("wellKnown"),
        "did": event:attr("did")
      }
    }
  }

  rule new_member {
    select when collection new_member
    pre {
      key = event:attr("Tx")
      name = event:attr("name")
      signing_key = random:uuid() + random:uuid()
      waiting = ent:waiting{name}
    }
    event:send({"eci": key, "domain": "collection", "type": "signing_key",
      "attrs": {"key": signing_key}})
    fired {
      ent:attendees{key} := name
      ent:members{name} := event:attrs.delete("name").put("pin", name)
      ent:keys{name} := signing_key
      raise attendees event "initials_provided" attributes waiting if waiting
      clear ent:waiting{name} if waiting
    }
  }

  // The game pico has the initials and tag-line; the owner pico gets them here.
  rule inform_attendee_of_initials {
    select when attendees initials_provided
      pin re#^(\d{4})$#
      setting(pin)
    pre {
      Tx = members(){[pin, "Tx"]}
      about = {"initials": event:attr("initials"), "tagline": event:attr("tagline"),
               "pending": event:attr("pending").defaultsTo([])}
    }
    if Tx then
      event:send({"eci": Tx, "domain": "about_me", "type": "signup_complete", "attrs": about})
    fired {
      ent:members{[pin, "initials"]} := about{"initials"}
      ent:members{[pin, "tagline"]} := about{"tagline"}
    } else {
      // not a member yet: passed on when it joins
      ent:waiting{pin} := event:attrs.delete("_headers")
    }
  }

  // A member's new connection count, as a number and in a signed map.
  rule update_high_scores {
    select when attendee new_connection
    pre {
      pin = attendees(){subs:established("Rx", meta:eci).head(){"Tx"}}
      count = event:attr("count")
      signed = event:attr("signed")
      ok = verified(pin, count, signed)
    }
    if ok then noop()
    fired {
      ent:counts{pin} := count
      ent:scores{pin} := score_of(pin, count)
      raise attendees event "scores_changed" attributes {"pin": pin}
    } else {
      raise attendees event "under_attack" attributes {"pin": pin, "count": count, "eci": meta:eci}
    }
  }

  rule record_attack {
    select when attendees under_attack
    fired {
      ent:attacks := attacks().append(event:attrs.delete("_headers"))
    }
  }

  // The game operator: rebuild attendees and scores from the subscriptions,
  // asking each member for its signed count.
  rule sync_members {
    select when attendees need_sync
    foreach subs:established("Rx_role", "collection") setting(bus)
    pre {
      pin = attendees(){bus{"Tx"}}
      signed = wrangler:picoQuery(bus{"Tx"}, "OpenWest2018.attendee", "signed_count", {})
      count = signed{"count"}
    }
    if verified(pin, count, signed) then noop()
    fired {
      ent:counts{pin} := count
      ent:scores{pin} := score_of(pin, count)
    }
  }

  // A new day: yesterday's counts become the base today's scores start from.
  rule roll_over_past_scores {
    select when attendees new_day
    pre {
      ranked = scores().keys().sort(function(a, b) { scores(){b} <=> scores(){a} })
      winner = ranked.head()
    }
    fired {
      ent:winners := winners().append({"day": day(), "pin": winner,
        "initials": members(){[winner, "initials"]}, "score": scores(){winner}})
      ent:old_scores := counts()
      ent:scores := {}
      ent:day := day() + 1
    }
  }
}

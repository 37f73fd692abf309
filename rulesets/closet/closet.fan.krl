ruleset closet.fan {
  meta {
    name "Closet: fan"
    description <<
      A fan's pico. The closet pico turns it on and off (fan:set {on}); its device
      driver (a GPIO pin on a Raspberry Pi, or the demo's simulated fan) follows
      the `state` query. It joins a closet with fan:join.
      Written for p2pico, after Pico Labs' computer-closet demo.
    >>
    author "p2pico"
    shares state
  }

  global {
    state = function() { {"on": ent:on.defaultsTo(false), "since": ent:since, "name": ent:name} }
  }

  rule join {
    select when fan join
      wellKnown re#^(.+)$#
      setting(wellKnown)
    fired {
      ent:name := event:attr("name")
      raise wrangler event "subscription" attributes {
        "wellKnown_Tx": wellKnown, "Rx_role": "fan", "Tx_role": "closet",
        "name": "closet-" + event:attr("name")
      }
    }
  }

  rule set {
    select when fan set
    pre {
      on = event:attr("on") == true || event:attr("on") == "true"
    }
    if on != ent:on.defaultsTo(false) then noop()
    fired {
      ent:on := on
      ent:since := event:attr("time")
    }
  }
}

ruleset closet.controller {
  meta {
    name "Closet: controller"
    description <<
      The closet pico. Sensors and fans subscribe to it (auto-accepted by role);
      each reading updates the hottest temperature, and the closet runs as many
      fans as that calls for, with hysteresis so fans do not flap:
        hottest >= threshold - 1.5  all fans
        hottest >= threshold - 3    at least one
        hottest <= threshold - 4.5  none
        otherwise                   as they are
      Written for p2pico, after Pico Labs' computer-closet demo.
    >>
    author "p2pico"
    use module io.picolabs.subscription alias subs
    shares status
  }

  global {
    threshold = function() { ent:threshold.defaultsTo(30) }
    fans = function() { subs:established("Tx_role", "fan") }

    status = function() {
      {"threshold": threshold(), "readings": ent:readings.defaultsTo({}),
       "fans_on": ent:fans_on.defaultsTo(0), "fans": fans().length(),
       "sensors": subs:established("Tx_role", "sensor").length(),
       "decisions": ent:decisions.defaultsTo(0)}
    }

    wanted = function(hottest, now_on, all) {
      hottest >= threshold() - 1.5 => all
        | hottest >= threshold() - 3 => [now_on, 1].sort().reverse().head()
        | hottest <= threshold() - 4.5 => 0
        | now_on
    }
  }

  rule set_threshold {
    select when closet threshold
      degrees re#^(\d+(\.\d+)?)$#
      setting(degrees)
    fired {
      ent:threshold := degrees.as("Number")
    }
  }

  rule auto_accept {
    select when wrangler inbound_pending_subscription_added
      Rx_role re#^(closet)$#
      setting(role)
    pre {
      other = event:attr("Tx_role")
    }
    if other == "sensor" || other == "fan" then noop()
    fired {
      raise wrangler event "pending_subscription_approval" attributes event:attrs
    }
  }

  rule temperature {
    select when closet temperature
    pre {
      bus = subs:established("Rx", meta:eci).head()
      readings = ent:readings.defaultsTo({}).put(event:attr("sensor"),
        {"temperature": event:attr("temperature"), "time": event:attr("time")})
      hottest = readings.values().map(function(r) { r{"temperature"} })
        .reduce(function(a, b) { a > b => a | b })
      now_on = ent:fans_on.defaultsTo(0)
      want = wanted(hottest, now_on, fans().length())
    }
    if bus && bus{"Tx_role"} == "sensor" then noop()
    fired {
      ent:readings := readings
      ent:decisions := ent:decisions.defaultsTo(0) + 1
      raise closet event "fans_needed" attributes {"count": want, "time": event:attr("time")}
        if want != now_on
    }
  }

  // The first `count` fans on, the others off (fans in the order they joined).
  rule fans_needed {
    select when closet fans_needed
    foreach fans() setting(fan, i)
    event:send({"eci": fan{"Tx"}, "domain": "fan", "type": "set",
      "attrs": {"on": i < event:attr("count"), "time": event:attr("time")}})
    fired {
      ent:fans_on := event:attr("count") on final
    }
  }
}

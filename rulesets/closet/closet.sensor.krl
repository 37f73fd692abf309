ruleset closet.sensor {
  meta {
    name "Closet: temperature sensor"
    description <<
      A temperature sensor's pico. Its device (a driver reading a real probe, or
      the demo's simulated one) sends sensor:reading; the pico keeps the latest
      reading and reports it to the closet pico it subscribed to (sensor:join).
      Written for p2pico, after Pico Labs' computer-closet demo.
    >>
    author "p2pico"
    use module io.picolabs.subscription alias subs
    shares latest, name
  }

  global {
    latest = function() { ent:latest }
    name = function() { ent:name }
    closet = function() { subs:established("Tx_role", "closet").head() }
  }

  rule join {
    select when sensor join
      wellKnown re#^(.+)$#
      setting(wellKnown)
    fired {
      ent:name := event:attr("name")
      raise wrangler event "subscription" attributes {
        "wellKnown_Tx": wellKnown, "Rx_role": "sensor", "Tx_role": "closet",
        "name": "closet-" + event:attr("name")
      }
    }
  }

  rule reading {
    select when sensor reading
    pre {
      temperature = event:attr("temperature").as("Number")
      at = event:attr("time")
    }
    if closet() then
      event:send({"eci": closet(){"Tx"}, "domain": "closet", "type": "temperature",
        "attrs": {"temperature": temperature, "time": at, "sensor": ent:name}})
    always {
      ent:latest := {"temperature": temperature, "time": at}
    }
  }
}

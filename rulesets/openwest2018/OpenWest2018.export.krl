ruleset OpenWest2018.export {
  meta {
    name "OpenWest 2018 game: export"
    description <<
      What this owner pico knows, as JSON (json) or CSV (csv, best as csv.txt).
      Written for p2pico.
    >>
    author "p2pico"
    use module OpenWest2018.attendee alias attendee
    use module OpenWest2018.contact_info alias contact_info
    shares json, csv
  }

  global {
    json = function() {
      attendee:about().put({
        "contact_info": contact_info:contact_info(),
        "connections": attendee:contacts().map(function(c, pin) { {"since": c{"since"}} })
      })
    }

    eol = <<
>>

    quoted = function(text) {
      "\"" + text.defaultsTo("").as("String").replace(re#"#g, "\"\"") + "\""
    }

    csv = function() {
      me = attendee:about();
      rows = attendee:contacts().keys().sort().map(function(pin) {
        [quoted(me{"pin"}), quoted(pin), quoted(attendee:contacts(){[pin, "since"]})].join(",")
      });
      (["\"pin\",\"connected_with\",\"since\""].append(rows)).join(eol) + eol
    }
  }
}

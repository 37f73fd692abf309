ruleset OpenWest2018.contact_info {
  meta {
    name "OpenWest 2018 game: contact info"
    description <<
      The owner's name, email, phone and so on, kept in io.picolabs.pds under
      the namespace "contact_info". Written for p2pico.
    >>
    author "p2pico"
    use module io.picolabs.pds alias pds
    provides contact_info
    shares contact_info
  }

  global {
    fields = ["name", "email", "phone", "address", "company", "url"]

    contact_info = function() {
      pds:items("contact_info"){"general"}.defaultsTo({})
    }
  }

  rule contact_info_updated {
    select when contact_info updated
    foreach fields setting(field)
    pre {
      value = event:attr(field)
    }
    if not value.isnull() then noop()
    fired {
      raise pds event "new_data_available"
        attributes {"namespace": "contact_info", "key": field, "value": value.as("String")}
    }
  }
}

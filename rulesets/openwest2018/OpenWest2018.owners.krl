ruleset OpenWest2018.owners {
  meta {
    name "OpenWest 2018 game: owner pico creation"
    description <<
      Installed in the game engine's root pico: owner:creation (sent by the game
      pico, its child) makes an owner pico, a child of the root and so a sibling
      of the game pico, and installs the rulesets the event lists. The owner
      picos outlive the game pico. Written for p2pico.
    >>
    author "p2pico"
    shares owners
  }

  global {
    owners = function() { ent:owners.defaultsTo({}) }
  }

  rule owner_creation {
    select when owner creation
      name re#^(\d{4})$#
      setting(name)
    pre {
      known = owners() >< name
    }
    if not known then noop()
    fired {
      ent:owners := owners().put(name, {"requested": time:now()})
      raise wrangler event "new_child_request" attributes event:attrs.delete("_headers")
    }
  }

  // The new child's wrangler is ready: install what the game asked for.
  rule install_owner_rulesets {
    select when wrangler child_initialized
    foreach event:attr("owner_rids").defaultsTo([]) setting(rid)
    pre {
      attrs = event:attrs.delete("owner_rids").delete("_headers").put("rid", rid)
    }
    event:send({"eci": event:attr("eci"), "domain": "wrangler", "type": "install_ruleset_request",
      "attrs": attrs})
    fired {
      ent:owners{[event:attr("name"), "eci"]} := event:attr("eci") on final
    }
  }
}

ruleset io.picolabs.pds {
  meta {
    name "PDS"
    description <<
      Pico Data Services: namespaced data, a profile and per-ruleset settings
      that every ruleset of the pico may share. Written for p2pico with the
      events, attributes and functions of pico-engine 1.4's pds ruleset.
    >>
    author "p2pico"
    use module io.picolabs.wrangler alias wrangler
    provides items, get_keys,
      profile,
      settings, get_config_value, get_setting_data_value, config_value, settings_names,
      getChannelEci
    shares items, get_keys,
      profile,
      settings, get_config_value, get_setting_data_value, config_value, settings_names,
      getChannelEci
  }

  global {
    // ent:general   {namespace: {key: value}}
    // ent:profile   {name, description, photo, email?, phone?, _created, _modified, ...}
    // ent:settings  {rid: {name, rid, schema, data: {key: value}}}

    // A plain grey silhouette, so a new profile needs no outside URL.
    placeholder_photo = "data:image/svg+xml;base64," + math:base64encode(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 64 64\">"
      + "<rect width=\"64\" height=\"64\" fill=\"#e0e0e0\"/>"
      + "<circle cx=\"32\" cy=\"24\" r=\"12\" fill=\"#9e9e9e\"/>"
      + "<ellipse cx=\"32\" cy=\"56\" rx=\"20\" ry=\"15\" fill=\"#9e9e9e\"/></svg>"
    )

    blank_profile = {"name": "", "description": "", "photo": placeholder_photo}

    channel_tag = "pds"
    channel_events = {"allow": [{"domain": "pds", "name": "*"}], "deny": []}
    channel_queries = {"allow": [{"rid": meta:rid, "name": "*"}], "deny": []}

    // {status, general}: everything, one namespace, or one item.
    items = function(namespace, key) {
      found = namespace.isnull() => ent:general
        | key.isnull() => ent:general{namespace}
        | ent:general{[namespace, key]};
      {"status": namespace.isnull() => "failed" | "success", "general": found}
    }

    get_keys = function(namespace) {
      ent:general{namespace}.keys()
    }

    // {status, profile}: the whole profile or one field.
    profile = function(key) {
      {"status": "success", "profile": key.isnull() => ent:profile | ent:profile{key}}
    }

    settings_names = function() {
      ent:settings.keys().map(function(rid) {
        {"setRID": rid, "setName": ent:settings{[rid, "name"]}}
      })
    }

    // {status, settings}: all settings, one ruleset's, one field of it, or one data value.
    settings = function(Rid, Key, detail) {
      found = Rid.isnull() => ent:settings
        | Key.isnull() => ent:settings{Rid}
        | detail.isnull() => ent:settings{[Rid, Key]}
        | ent:settings{[Rid, "data", detail]};
      {"status": "success", "settings": found}
    }

    get_setting_data_value = function(setRID, setKey) {
      ent:settings{[setRID, "data", setKey]}
    }

    // pico-engine's config_value(key) reads the calling ruleset's settings through
    // meta:callingRID, which does not exist there; here the ruleset is named.
    config_value = function(setKey, setRID) {
      setRID.isnull() => null | get_setting_data_value(setRID, setKey)
    }

    get_config_value = function(setKey, setRID) {
      config_value(setKey, setRID)
    }

    getChannelEci = function() {
      ent:pds_channel_eci
    }

    stamp = function() {
      time:strftime(time:now(), "%Y%m%dT%H%M%S%z")
    }
  }

  // -- ent:general ------------------------------------------------------------

  rule add_item {
    select when pds new_data_available
    pre {
      namespace = event:attr("namespace").defaultsTo("")
      key = event:attr("key").defaultsTo("")
      value = event:attr("value").defaultsTo("")
    }
    always {
      ent:general{[namespace, key]} := value
      raise pds event "data_added" attributes {"namespace": namespace, "keyvalue": key}
    }
  }

  // Merges the map `value` into the item, one field at a time.
  rule update_item {
    select when pds updated_data_available
    foreach event:attr("value") || {} setting(field_value, field)
    pre {
      namespace = event:attr("namespace").defaultsTo("")
      key = event:attr("key").defaultsTo("")
    }
    always {
      ent:general{[namespace, key, field]} := field_value
      raise pds event "data_updated" attributes {"namespace": namespace, "keyvalue": key}
    }
  }

  rule remove_item {
    select when pds remove_old_data
    pre {
      namespace = event:attr("namespace").defaultsTo("")
      key = event:attr("key").defaultsTo("")
    }
    always {
      clear ent:general{[namespace, key]}
      raise pds event "data_deleted" attributes {"namespace": namespace, "keyvalue": key}
    }
  }

  rule remove_namespace {
    select when pds remove_namespace
    pre {
      namespace = event:attr("namespace").defaultsTo("")
    }
    always {
      clear ent:general{namespace}
      raise pds event "namespace_deleted" attributes {"namespace": namespace}
    }
  }

  // `mapvalues` is JSON text; it replaces the whole namespace.
  rule itemed_mapped {
    select when pds map_item
    pre {
      namespace = event:attr("namespace").defaultsTo("")
      mapvalues = event:attr("mapvalues").defaultsTo("").decode()
    }
    always {
      ent:general{namespace} := mapvalues
      raise pds event "new_map_added" attributes {"namespace": namespace, "mapvalues": mapvalues}
    }
  }

  // -- ent:profile --------------------------------------------------------------

  rule update_profile {
    select when pds updated_profile
    pre {
      given = event:attrs.delete("_headers")
      current = ent:profile || blank_profile
      field = function(name) { given{name}.isnull() => current{name} | given{name} }
      updated = given
        .put("name", field("name"))
        .put("description", field("description"))
        .put("photo", field("photo"))
        .put("email", field("email"))
        .put("phone", field("phone"))
        .put("_created", current{"_created"} || stamp())
        .put("_modified", stamp())
        .filter(function(value, name) { not value.isnull() })
    }
    if given.keys().length() > 0 then noop()
    fired {
      ent:profile := updated
      raise pds event "profile_updated" attributes given.put("_status", "success")
    } else {
      raise pds event "profile_updated" attributes given.put("_status", "failure")
    }
  }

  // -- ent:settings ---------------------------------------------------------------

  rule settings_added {
    select when pds add_settings
    pre {
      rid = event:attr("keyed_rid")
      schema = event:attr("schema")
      data_key = event:attr("data_key")
    }
    if rid then noop()
    fired {
      ent:settings{[rid, "name"]} := event:attr("name").defaultsTo(0)
      ent:settings{[rid, "rid"]} := rid
      ent:settings{[rid, "schema"]} := schema if schema
      ent:settings{[rid, "data", data_key]} := event:attr("value").defaultsTo(0) if data_key
      raise pds event "settings_added" attributes event:attrs
    }
  }

  rule clearPDS {
    select when pds clear_all_data
    always {
      clear ent:general
      clear ent:profile
      clear ent:settings
    }
  }

  // -- set-up -------------------------------------------------------------------------

  // The pds channel: pds:* events and this ruleset's queries. Made once (pico-engine
  // 1.4 looks for it by a field channels do not have, and so never finds it).
  rule create_pds_channel {
    select when wrangler ruleset_installed where event:attr("rids") >< meta:rid
             or engine started
    pre {
      existing = wrangler:channels(channel_tag).head()
    }
    if existing.isnull() then
      wrangler:createChannel([channel_tag], channel_events, channel_queries) setting(channel)
    fired {
      ent:pds_channel_eci := channel{"id"}
    } else {
      ent:pds_channel_eci := existing{"id"}
    }
  }

  rule seed_profile_name {
    select when wrangler ruleset_installed where event:attr("rids") >< meta:rid
    pre {
      wrangler_name = wrangler:myself(){"name"}
      profile_name = ent:profile{"name"}
    }
    if wrangler_name && (profile_name.isnull() || profile_name == "") then noop()
    fired {
      raise pds event "updated_profile" attributes {"name": wrangler_name}
    }
  }
}

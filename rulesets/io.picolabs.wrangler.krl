ruleset io.picolabs.wrangler {
  meta {
    name "Wrangler"
    description <<
      A pico's management API, written for p2pico with the events, attributes
      and functions of pico-engine 1.4's wrangler: children, rulesets,
      channels, and queries of other picos. Other rulesets use it as a module:
      use module io.picolabs.wrangler alias wrangler
    >>
    author "p2pico"

    provides skyQuery, picoQuery,
      channels, createChannel, deleteChannel,
      rulesetConfig, rulesetMeta, installedRIDs,
      children, parent_eci, name, myself
    shares skyQuery, picoQuery,
      channels,
      rulesetConfig, rulesetMeta, installedRIDs,
      children, parent_eci, name, myself, id
  }

  global {
    __testing = {
      "queries": [
        {"name": "name"},
        {"name": "myself"},
        {"name": "channels", "args": ["tags"]},
        {"name": "installedRIDs"},
        {"name": "skyQuery", "args": ["eci", "mod", "func", "params", "_host", "_path", "_root_url"]},
        {"name": "children", "args": []}
      ],
      "events": [
        {"domain": "wrangler", "name": "new_child_request", "attrs": ["name", "backgroundColor"]},
        {"domain": "wrangler", "name": "child_deletion_request", "attrs": ["eci"]},
        {"domain": "wrangler", "name": "new_channel_request", "attrs": ["tags", "eventPolicy", "queryPolicy"]},
        {"domain": "wrangler", "name": "channel_deletion_request", "attrs": ["eci"]},
        {"domain": "wrangler", "name": "install_ruleset_request", "attrs": ["url"]},
        {"domain": "wrangler", "name": "install_ruleset_request", "attrs": ["absoluteURL", "rid"]},
        {"domain": "wrangler", "name": "uninstall_ruleset_request", "attrs": ["rid"]}
      ]
    }

    // -- querying other picos ------------------------------------------------
    //
    // p2pico routes every ECI and DID across the mesh, so both functions ask
    // the pico with ctx:query wherever it runs; _host, _path and _root_url are
    // accepted and not needed. (pico-engine makes an HTTP call for another
    // host and asks DIDs over DIDComm.)

    // What pico-engine hands back when a pico queries one of its own channels.
    own_channel_answer = {
      "status_code": 400,
      "status_line": "HTTP/1.1 400 Pico should not query itself",
      "content": "{\"error\":\"Pico should not query itself\"}"
    }

    is_own_channel = function(eci) {
      ctx:channels.any(function(c) { c{"id"} == eci })
    }

    // skyQuery's error map, built as pico-engine builds it from an HTTP answer.
    query_failure = function(code, line, content) {
      is_map = content.typeof() == "Map";
      failure = (is_map && not content{"error"}.isnull()) => content{"error"} | 0;
      failure_text = (is_map && not content{"error_str"}.isnull()) => content{"error_str"} | 0;
      {
        "error": "sky query request was unsuccesful.",
        "httpStatus": {"code": code, "message": line},
        "picoQueryError": failure,
        "picoQueryErrorMsg": failure_text,
        "picoQueryReturnValue": content
      }
    }

    is_failed_answer = function(content) {
      content.isnull()
        || content == "null"
        || (content.typeof() == "Map" && (not content{"error"}.isnull() || not content{"error_str"}.isnull()))
    }

    picoQuery = function(eci, mod, func, params, _host, _path, _root_url) {
      args = params.typeof() == "Map" => params | {};
      is_own_channel(eci) => own_channel_answer | ctx:query(eci, mod, func, args)
    }

    skyQuery = function(eci, mod, func, params, _host, _path, _root_url) {
      args = params.typeof() == "Map" => params | {};
      own = is_own_channel(eci);
      answer = own => own_channel_answer{"content"}.decode() | ctx:query(eci, mod, func, args);
      own => query_failure(400, own_channel_answer{"status_line"}, answer)
        | is_failed_answer(answer) => query_failure(200, "HTTP/1.1 200 OK", answer)
        | answer
    }

    // -- rulesets ------------------------------------------------------------

    installed = function(rid) {
      ctx:rulesets.filter(function(r) { r{"rid"} == rid }).head()
    }

    rulesetConfig = function(rid) {
      installed(rid){"config"}
    }

    rulesetMeta = function(rid) {
      installed(rid){["meta", "krlMeta"]}
    }

    installedRIDs = function() {
      ctx:rulesets.map(function(r) { r{"rid"} })
    }

    // What ctx:newPico needs to install a ruleset this pico has: its URL, or its
    // source when it was installed from source.
    ruleset_for_child = function(rid) {
      r = installed(rid);
      r.isnull() => null | {"url": r{"url"} || r{["meta", "krl"]}, "config": r{"config"} || {}}
    }

    // The URL of ruleset `rid` in the folder this ruleset was installed from.
    sibling_url = function(rid) {
      mine = installed(ctx:rid){"url"};
      parts = mine.typeof() == "String" => mine.split("/") | [];
      parts.length() > 0 => parts.splice(parts.length() - 1, 1, rid + ".krl").join("/") | null
    }

    // -- channels ------------------------------------------------------------

    // Tags as one canonical string: lower case, sorted, comma separated.
    tag_key = function(tags) {
      text = tags.typeof() == "Array" => tags.join(",") | tags.as("String");
      text.lc().split(",").sort().join(",")
    }

    channels = function(tags) {
      tags.isnull() || tags == "" => ctx:channels
        | ctx:channels.filter(function(c) { c{"tags"}.sort().join(",") == tag_key(tags) })
    }

    createChannel = defaction(tags, eventPolicy, queryPolicy) {
      ctx:newChannel(tags = tags, eventPolicy = eventPolicy, queryPolicy = queryPolicy) setting(made)
      return made
    }

    deleteChannel = defaction(eci) {
      ctx:delChannel(eci)
    }

    // -- this pico and its family --------------------------------------------

    myself = function() {
      {"name": ent:name, "id": ent:id, "eci": ent:eci}
    }

    children = function() {
      ctx:children.map(function(eci) {
        {
          "eci": eci,
          "name": ctx:query(eci, ctx:rid, "name"),
          "parent_eci": ctx:query(eci, ctx:rid, "parent_eci")
        }
      })
    }

    parent_eci = function() {
      ent:parent_eci
    }

    name = function() {
      ent:name
    }

    id = function() {
      meta:picoId
    }

    ui_rid = "io.picolabs.pico-engine-ui"

    // The event's attributes for another pico: without the HTTP request's headers
    // (pico-engine passes them on; they may carry a caller's credentials).
    outgoing = function() {
      event:attrs.delete("_headers")
    }

    ui_eci = function() {
      channels("engine,ui").head(){"id"}
    }
  }

  // -- system --------------------------------------------------------------

  // Passes system:online down the tree (pico-engine 1.x does not raise it).
  rule systemOnLine {
    select when system online
    foreach ctx:children setting(child_eci)
    event:send({"eci": child_eci, "domain": "system", "type": "online", "attrs": outgoing()})
  }

  // -- rulesets ------------------------------------------------------------

  // A ruleset beside another: `rid`.krl in the folder of `absoluteURL`.
  rule install_ruleset_relatively {
    select when wrangler install_ruleset_request
      absoluteURL re#(.+)#
      rid re#(.+)#
      setting(absoluteURL, rid)
    pre {
      segments = absoluteURL.split("/")
      url = segments.splice(segments.length() - 1, 1, rid + ".krl").join("/")
    }
    fired {
      raise wrangler event "install_ruleset_request"
        attributes event:attrs.delete("absoluteURL").put("url", url)
    }
  }

  // `url` is a file:// URL in the node's ruleset folders, or the KRL source.
  // Installing reads it again, so there is no separate flush.
  rule install_ruleset_absolutely {
    select when wrangler install_ruleset_request
      url re#.#
    pre {
      url = event:attr("url")
      config = event:attr("config") || {}
    }
    ctx:install(url = url, config = config) setting(rid)
    fired {
      raise wrangler event "ruleset_installed" attributes event:attrs.put("rids", [rid])
    }
  }

  rule uninstall_one_ruleset {
    select when wrangler uninstall_ruleset_request
      rid re#(.+)#
      setting(rid)
    ctx:uninstall(rid)
    fired {
      raise wrangler event "ruleset_uninstalled" attributes event:attrs
    }
  }

  // p2pico reads a ruleset's URL each time it installs it; reinstalling is the flush.
  rule flush_all_rulesets {
    select when wrangler rulesets_need_flushing
    foreach ctx:rulesets setting(r)
    if r{"url"} then ctx:install(url = r{"url"}, config = r{"config"} || {})
    always {
      raise wrangler event "rulesets_flushed" on final
    }
  }

  // -- channels ------------------------------------------------------------

  rule createChannel {
    select when wrangler new_channel_request
    pre {
      tags = event:attr("tags")
      eventPolicy = event:attr("eventPolicy")
      queryPolicy = event:attr("queryPolicy")
    }
    if tags && eventPolicy && queryPolicy then
      createChannel(tags, eventPolicy, queryPolicy) setting(channel)
    fired {
      raise wrangler event "channel_created" attributes event:attrs.put("channel", channel)
    }
  }

  rule deleteChannel {
    select when wrangler channel_deletion_request
      eci re#^(.+)$#
      setting(eci)
    deleteChannel(eci)
    fired {
      raise wrangler event "channel_deleted" attributes event:attrs
    }
  }

  // -- children: the parent's side -----------------------------------------

  // The child gets this pico's UI ruleset (when it has one) and wrangler; its
  // wrangler then installs pds and subscription (wrangler:pico_created below).
  rule createChild {
    select when wrangler new_child_request
      name re#.+#
    pre {
      child_name = event:attr("name")
      color = event:attr("backgroundColor") || "#87CEFA"
      ui = ruleset_for_child(ui_rid)
      child_rulesets = ui.isnull() => [ruleset_for_child(ctx:rid)]
        | [ui, ruleset_for_child(ctx:rid)]
      my_ui_eci = ui_eci()
    }
    every {
      ctx:newPico(rulesets = child_rulesets) setting(child_eci)
      // Sent in this order, and the child takes them in this order. A child
      // without the UI ruleset has no rule for the engine_ui events.
      ctx:event(eci = child_eci, domain = "engine_ui", name = "setup", attrs = {})
      ctx:event(eci = child_eci, domain = "wrangler", name = "pico_created", attrs = outgoing())
      ctx:event(
        eci = child_eci,
        domain = "engine_ui",
        name = "box",
        attrs = {"name": child_name, "backgroundColor": color, "parentUiEci": my_ui_eci}
      )
    }
    fired {
      raise wrangler event "new_child_created"
        attributes event:attrs.put({"eci": child_eci, "uiEci": null})
    }
  }

  rule deleteOneChild {
    select when wrangler child_deletion_request
      eci re#^(.+)$#
      setting(eci)
    ctx:delPico(eci)
    fired {
      raise wrangler event "child_deleted" attributes event:attrs
    }
  }

  // p2pico: move this pico to another engine of the mesh, named by its peer id
  // ("to"), once this event's transaction commits (ctx:move; not in pico-engine).
  rule move_pico {
    select when wrangler move_request
      to re#^(.+)$#
      setting(to)
    ctx:move(to)
  }

  // -- children: the child's side ------------------------------------------

  // The first event a new pico gets (from its parent, or from the node for a
  // top-level pico made with `p2pico pico new --wrangler`).
  rule initialize_child_after_creation {
    select when wrangler pico_created
    pre {
      pds_url = sibling_url("io.picolabs.pds")
      subscription_url = sibling_url("io.picolabs.subscription")
      family_eci = meta:eci || channels("system,self").head(){"id"}
    }
    fired {
      raise wrangler event "install_ruleset_request" attributes {"url": pds_url} if pds_url
      raise wrangler event "install_ruleset_request" attributes {"url": subscription_url}
        if subscription_url
      ent:parent_eci := ctx:parent
      ent:name := event:attr("name")
      ent:id := ctx:picoId
      ent:eci := family_eci
      raise wrangler event "pico_initialized"
        attributes event:attrs.put("eci", family_eci).put("uiEci", ui_eci())
    }
  }

  rule finish_child_initialization {
    select when wrangler pico_initialized
    if ent:parent_eci then
      event:send({
        "eci": ent:parent_eci,
        "domain": "wrangler",
        "type": "child_initialized",
        "attrs": outgoing()
      })
  }

  // The node's root pico: engine_ui:setup names it once.
  rule pico_root_created {
    select when engine_ui setup
    if ctx:parent.isnull() && ent:id.isnull() then noop()
    fired {
      ent:id := ctx:picoId
      ent:eci := channels("system,self").head(){"id"}
      ent:name := "Pico"
    }
  }

  rule take_note_of_name_change {
    select when wrangler name_changed
      name re#(.+)#
      setting(new_name)
    fired {
      ent:name := new_name
    }
  }

  rule child_initiates_deletion {
    select when wrangler ready_for_deletion
    pre {
      my_family_eci = channels("system,child").head(){"id"}
    }
    if my_family_eci && ent:parent_eci then
      event:send({
        "eci": ent:parent_eci,
        "domain": "wrangler",
        "type": "child_deletion_request",
        "attrs": {"eci": my_family_eci}
      })
  }
}

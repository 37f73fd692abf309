ruleset OpenWest2018.ui {
  meta {
    name "OpenWest 2018 game: ui"
    description <<
      The pages a phone sees while signing up. Each rule answers the phone's
      request with an _html directive holding the page (as in the 2018 game)
      and, where the phone's identity changes, a _cookie. The same pages are
      also served as a query (page.html). Written for p2pico.
    >>
    author "p2pico"
    use module OpenWest2018.keys alias ids
    use module OpenWest2018.tags alias tags
    use module io.picolabs.wrangler alias wrangler
    shares page
  }

  global {
    esc = function(text) {
      text.defaultsTo("").as("String")
        .replace(re#&#g, "&amp;").replace(re#<#g, "&lt;")
        .replace(re#>#g, "&gt;").replace(re#"#g, "&quot;")
    }

    layout = function(title, body) {
      <<<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>#{esc(title)}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:40em}
h1{color:#7a1f5c}input{font-size:1.2em;margin:.3em 0}.pin{font-family:monospace}</style>
</head><body><h1>#{esc(title)}</h1>
#{body}
<p><small>OpenWest 2018 connections game, on p2pico</small></p></body></html>
>>
    }

    page_url = function(name, id) {
      "/sky/cloud/" + meta:eci + "/" + meta:rid + "/page.html?name=" + name + "&id=" + id
    }

    initials_page = function(id, pin) {
      layout("Enter initials", <<
<p>Your pin is <span class="pin" id="pin">#{pin}</span>.</p>
<form method="get" action="/sky/event/#{meta:eci}/none/tag/initials_provided">
<input type="hidden" name="id" value="#{id}">
<p>Short name or initials<br><input name="initials" maxlength="12" required></p>
<p>Tag-line<br><input name="tagline" maxlength="80"></p>
<p><input type="submit" value="Join the game"></p>
</form>
>>)
    }

    recovery_page = function(id, pin) {
      layout("Connection recovery", <<
<p>This sign-up tag (pin <span class="pin">#{pin}</span>) is already taken, and this
device is not known. If it is yours, give the initials and tag-line you chose.</p>
<form method="get" action="/sky/event/#{meta:eci}/none/tag/recovery_codes_provided">
<input type="hidden" name="id" value="#{id}">
<p>Initials<br><input name="initials" maxlength="12"></p>
<p>Tag-line<br><input name="tagline" maxlength="80"></p>
<p><input type="submit" value="Recover"></p>
</form>
>>)
    }

    welcome_page = function(id, pin) {
      member = wrangler:picoQuery(tags:attendees_eci(), "OpenWest2018.collection", "member",
        {"pin": pin});
      intro = member{"intro"};
      intro.isnull()
        => layout("Welcome", <<<p>Your pico (pin <span class="pin" id="pin">#{pin}</span>)
is being made. <a href="#{page_url("welcome", id)}">Reload</a> in a moment.</p>
>>)
        | layout("Welcome", <<<p>Welcome, <b id="initials">#{esc(member{"initials"})}</b>
(pin <span class="pin" id="pin">#{pin}</span>)! <i>#{esc(member{"tagline"})}</i></p>
<p>Others connect with you by scanning your code:
<a id="intro" href="/sky/event/#{intro}/none/tag/scanned">/sky/event/#{intro}/none/tag/scanned</a></p>
<p><a id="mine" href="/sky/cloud/#{intro}/OpenWest2018.attendee.ui/landing.html">Your pico's page</a>
shows your connections.</p>
>>)
    }

    page = function(name, id) {
      pin = id.typeof() == "String" && id.length() == 15 && ids:valid(id) => ids:as_pin(id) | null;
      pin.isnull() => layout("Not a game tag", <<<p>This code is not one of ours.</p>
>>)
        | name == "initials" => initials_page(id, pin)
        | name == "recovery" => recovery_page(id, pin)
        | name == "welcome" => welcome_page(id, pin)
        | name == "taken" => layout("Already taken", <<<p>This sign-up tag belongs to
someone else. Scan their own code to connect.</p>
>>)
        | name == "refused" => layout("Not accepted", <<<p>Those answers did not match.
<a href="#{page_url("recovery", id)}">Try again</a> or visit our booth.</p>
>>)
        | layout("Not a page", <<<p>No such page.</p>
>>)
    }
  }

  rule tag_invalid {
    select when tag invalid_tag
    send_directive("_html", {"content": page("reject", "none")})
  }

  rule tag_first_scan {
    select when tag first_scan
      or tag still_need_initials
    pre {
      id = event:attr("id")
      pin = ids:as_pin(id)
    }
    every {
      send_directive("_cookie", {"cookie": <<whoami=#{pin}; Path=/>>})
      send_directive("_html", {"content": page("initials", id)})
    }
  }

  rule tag_recovery_needed {
    select when tag recovery_needed
    send_directive("_html", {"content": page("recovery", event:attr("id"))})
  }

  rule tag_subsequent_scan {
    select when tag subsequent_scan
    pre {
      id = event:attr("id")
    }
    send_directive("_html", {"content": page(event:attr("mine") => "welcome" | "taken", id)})
  }

  rule tag_initials_provided {
    select when tag initials_recorded
    every {
      // the phone's pending connections are on their way to its new pico
      send_directive("_cookie", {"cookie": "pending=; Path=/; Max-Age=0"})
      send_directive("_html", {"content": page("welcome", event:attr("id"))})
    }
  }

  rule tag_initials_refused {
    select when tag initials_refused
    send_directive("_html", {"content": page("refused", event:attr("id"))})
  }

  rule tag_recovery_codes_accepted {
    select when tag recovery_codes_accepted
    pre {
      id = event:attr("id")
      pin = ids:as_pin(id)
    }
    every {
      send_directive("_cookie", {"cookie": <<whoami=#{pin}; Path=/>>})
      send_directive("_html", {"content": page("welcome", id)})
    }
  }

  rule tag_recovery_codes_rejected {
    select when tag recovery_codes_rejected
    send_directive("_html", {"content": page("refused", event:attr("id"))})
  }
}

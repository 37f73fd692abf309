ruleset OpenWest2018.attendee.ui {
  meta {
    name "OpenWest 2018 game: attendee pages"
    description <<
      The pages a phone sees after scanning an owner pico's intro code, and the
      owner's own landing page. Queried through the intro channel as
      /sky/cloud/<intro eci>/OpenWest2018.attendee.ui/page.html. Written for p2pico.
    >>
    author "p2pico"
    use module OpenWest2018.attendee alias attendee
    shares page, landing
  }

  global {
    esc = function(text) {
      text.defaultsTo("").as("String")
        .replace(re#&#g, "&amp;").replace(re#<#g, "&lt;")
        .replace(re#>#g, "&gt;").replace(re#"#g, "&quot;")
    }

    layout = function(title, body) {
      me = attendee:about();
      <<<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>#{esc(title)}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:40em}h1{color:#7a1f5c}</style>
</head><body><h1>#{esc(title)}</h1>
#{body}
<p><small>#{esc(me{"initials"})} (#{me{"pin"}}) in the OpenWest 2018 connections game, on p2pico</small></p>
</body></html>
>>
    }

    landing = function() {
      me = attendee:about();
      contacts = attendee:contacts().keys().sort();
      layout(me{"initials"}.defaultsTo(me{"pin"}), <<<p><i>#{esc(me{"tagline"})}</i></p>
<p>Scan to connect: <a id="intro" href="/sky/event/#{me{"intro"}}/none/tag/scanned">/sky/event/#{me{"intro"}}/none/tag/scanned</a></p>
<p><b id="count">#{contacts.length()}</b> connections: <span id="contacts">#{contacts.join(", ")}</span></p>
>>)
    }

    page = function(name, with) {
      name == "pending" => layout("Almost connected", <<<p>You are not in the game yet.
Visit the Pico Labs booth to sign up: this connection counts as soon as you do.</p>
>>)
      | name == "self" => layout("That's you", <<<p>This is your own code. Scan someone else's!</p>
>>)
      | name == "already" => layout("Already connected", <<<p>You and #{esc(with)} are already connected.</p>
>>)
      | name == "connected" => layout("Connected", <<<p>You (<span id="with">#{esc(with)}</span>) and
#{esc(attendee:about(){"initials"})} are now connected: one point each.</p>
>>)
      | name == "unknown" => layout("Who are you?", <<<p>This device is not known to the game.
Visit the Pico Labs booth.</p>
>>)
      | landing()
    }
  }
}

// The page with JavaScript: choose, drop or paste photos, see previews, send them together to
// POST /Diagnosis/predictions and draw one card per photo (the markup of templates/_results.html).
// Without JavaScript the same form posts to /diagnose and the server draws the cards.
(function () {
  "use strict";

  document.documentElement.classList.add("js");
  var form = document.getElementById("diagnose-form");
  if (!form || !window.fetch || !window.FormData || !window.URL) {
    return;
  }

  var data = form.dataset;
  var limits = {
    photos: Number(data.maxPhotos),
    photoBytes: Number(data.maxPhotoBytes),
    requestBytes: Number(data.maxRequestBytes),
    topK: Number(data.topK),
  };
  var pickers = [document.getElementById("photos"), document.getElementById("camera")];
  var dropzone = document.getElementById("dropzone");
  var submitButton = document.getElementById("diagnose-button");
  var clearButton = document.getElementById("clear-button");
  var formError = document.getElementById("form-error");
  var status = document.getElementById("status");
  var section = document.getElementById("results-section");
  var results = document.getElementById("results");
  var IMAGE_NAME = /\.(jpe?g|png|webp|bmp|tiff?|gif|heic|heif|avif)$/i;

  var chosen = []; // {file, number, problem, url, card}
  var finished = false; // the cards shown are answers: photos chosen next start a new list
  var sending = false;
  var notes = null; // a promise of {label: note}, fetched once

  clearButton.hidden = false;

  // --- words ---------------------------------------------------------------------------------

  function megabytes(size) {
    var mb = size / (1024 * 1024);
    return (mb < 10 ? mb.toFixed(1) : mb.toFixed(0)) + " MB";
  }

  function percent(value) {
    return value < 0.005 ? "<1%" : Math.round(value * 100) + "%";
  }

  function capitalised(words) {
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function labelWords(label) {
    var cut = label.indexOf("_");
    var plant = cut < 0 ? label : label.slice(0, cut);
    return plant + ": " + capitalised(cut < 0 ? "unknown" : label.slice(cut + 1));
  }

  function problemFor(statusCode, message) {
    if (statusCode === 413) return { title: "This photo is too large.", detail: message };
    if (statusCode === 415) return { title: "This file is not a photo the service can read.", detail: message };
    if (statusCode === 503) return { title: "The service is busy.", detail: "Try again in a moment." };
    if (statusCode === 400) return { title: "This file could not be read as a photo.", detail: message };
    return { title: "Something went wrong with this photo.", detail: message || "Try again." };
  }

  function check(file) {
    var looksLikeImage = file.type ? file.type.indexOf("image/") === 0 : IMAGE_NAME.test(file.name);
    if (!looksLikeImage) {
      return {
        title: "This file is not a photo.",
        detail: "Choose a photo of a leaf (" + data.formats + ").",
      };
    }
    if (file.size === 0) {
      return { title: "This file is empty.", detail: "Choose the photo again, or take a new one." };
    }
    if (file.size > limits.photoBytes) {
      return {
        title: "This photo is too large.",
        detail:
          "It is " + megabytes(file.size) + "; each photo may be up to " + megabytes(limits.photoBytes) +
          ". Send a smaller copy (phones can share a smaller size).",
      };
    }
    return null;
  }

  // --- markup ----------------------------------------------------------------------------------

  function el(tag, attributes) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (name === "text") node.textContent = attributes[name];
      else node.setAttribute(name, attributes[name]);
    });
    for (var i = 2; i < arguments.length; i++) {
      if (arguments[i]) node.append(arguments[i]);
    }
    return node;
  }

  function verdict(kind, icon, words) {
    return el("p", { class: "verdict verdict-" + kind }, el("span", { class: "icon", "aria-hidden": "true", text: icon }), " " + words);
  }

  function barRow(tag, id, label, value) {
    return el(
      tag,
      { class: "bar-row" },
      el("label", { for: id, text: label }),
      el("meter", { id: id, min: "0", max: "1", value: value.toFixed(4), text: percent(value) }),
      el("span", { class: "bar-value", text: percent(value) })
    );
  }

  function cardFrame(item, kind) {
    item.card.className = "card card-" + kind;
    var keep = [item.card.querySelector(".card-title"), item.card.querySelector(".preview")];
    item.card.replaceChildren.apply(item.card, keep.filter(Boolean));
    return item.card;
  }

  function pendingCard(item) {
    var card = el("li", { class: "card" }, el("h3", { class: "card-title", text: "Photo " + item.number + ": " + item.file.name }));
    if (item.url) {
      card.append(el("img", { class: "preview", src: item.url, alt: "Photo " + item.number + ": " + item.file.name }));
    }
    card.append(el("p", { class: "pending", text: "Ready to send." }));
    return card;
  }

  function showPending(item, words) {
    cardFrame(item, "pending").append(el("p", { class: "pending", text: words }));
  }

  function showProblem(item, problem) {
    cardFrame(item, "problem").append(
      verdict("problem", "!", problem.title),
      el("p", { class: "detail", text: problem.detail })
    );
  }

  function showUnknown(item, diagnosis) {
    cardFrame(item, "unknown").append(
      verdict("unknown", "?", "No diagnosis: not a leaf the model knows"),
      el("p", { class: "message", text: diagnosis.message || data.notALeaf })
    );
  }

  function showDiagnosis(item, diagnosis, note) {
    var card = cardFrame(item, diagnosis.healthy ? "healthy" : "disease");
    card.append(el("p", { class: "plant", text: diagnosis.species }));
    card.append(diagnosis.healthy ? verdict("healthy", "\u2713", "Healthy") : verdict("disease", "!", capitalised(diagnosis.condition)));
    card.append(barRow("div", "confidence-" + item.number, "How sure", diagnosis.confidence));
    if (diagnosis.confidence < 0.5) {
      card.append(el("p", { class: "unsure", text: "The model is not sure: compare the other possibilities and the signs below." }));
    }
    var others = (diagnosis.top_k || []).slice(1);
    if (others.length) {
      var list = el("ul", { class: "runners" });
      others.forEach(function (guess, i) {
        list.append(barRow("li", "runner-" + item.number + "-" + (i + 1), labelWords(guess.label), guess.confidence));
      });
      card.append(el("h4", { text: "Other possibilities" }), list);
    }
    if (note) card.append(noteSection(note));
  }

  function listOf(texts) {
    var list = el("ul");
    texts.forEach(function (text) {
      list.append(el("li", { text: text }));
    });
    return list;
  }

  function noteSection(note) {
    return el(
      "section",
      { class: "note" },
      el("h4", { text: "About " + labelWords(note.label) }),
      el("p", { text: note.summary }),
      el(
        "details",
        {},
        el("summary", { text: "Signs to look for and what growers usually do" }),
        el("h5", { text: "Signs to look for" }),
        listOf(note.signs),
        el("h5", { text: "What growers usually do" }),
        listOf(note.management)
      ),
      el(
        "p",
        { class: "source" },
        "Source: ",
        el("a", { href: note.source.url, rel: "noopener noreferrer", text: note.source.name + ": " + note.source.title })
      ),
      el("p", { class: "note-disclaimer", text: "Information, not advice." })
    );
  }

  // --- state -----------------------------------------------------------------------------------

  function showError(title, detail) {
    formError.replaceChildren(el("strong", { text: title }), " " + detail);
    formError.hidden = false;
  }

  function clearError() {
    formError.replaceChildren();
    formError.hidden = true;
  }

  function reset() {
    chosen.forEach(function (item) {
      if (item.url) URL.revokeObjectURL(item.url);
    });
    chosen = [];
    finished = false;
    results.replaceChildren();
    section.hidden = true;
    status.textContent = "";
    clearError();
  }

  function addFiles(files) {
    if (sending || !files || !files.length) return;
    if (finished || (!chosen.length && results.children.length)) reset(); // answers shown: start anew
    clearError();
    var left = 0;
    Array.prototype.forEach.call(files, function (file) {
      if (chosen.length >= limits.photos) {
        left += 1;
        return;
      }
      var item = { file: file, number: chosen.length + 1, problem: check(file) };
      if (!item.problem) item.url = URL.createObjectURL(file);
      item.card = pendingCard(item);
      if (item.problem) showProblem(item, item.problem);
      results.append(item.card);
      chosen.push(item);
    });
    if (left) {
      showError("Too many photos at once.", "Send at most " + limits.photos + " photos at a time; " + left + " were left out.");
    }
    section.hidden = false;
    var ready = sendable().length;
    status.textContent = ready
      ? ready + (ready === 1 ? " photo" : " photos") + " ready: press Diagnose."
      : "No photo to send yet.";
  }

  function sendable() {
    return chosen.filter(function (item) {
      return !item.problem && !item.done;
    });
  }

  function conditionNotes() {
    if (!notes) {
      notes = fetch(data.conditions, { headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.ok ? response.json() : { conditions: [] };
        })
        .then(function (body) {
          var byLabel = {};
          (body.conditions || []).forEach(function (note) {
            byLabel[note.label] = note;
          });
          return byLabel;
        })
        .catch(function () {
          notes = null;
          return {};
        });
    }
    return notes;
  }

  function setSending(value) {
    sending = value;
    submitButton.disabled = value;
    clearButton.disabled = value;
    results.setAttribute("aria-busy", value ? "true" : "false");
  }

  function summary(item, result) {
    if (result.status !== 200) return "photo " + item.number + ": " + problemFor(result.status, result.message).title;
    var d = result.diagnosis;
    var v = d.in_domain || {};
    if (v.available && v.known === false) return "photo " + item.number + ": not a leaf the model knows";
    return "photo " + item.number + ": " + d.species + ", " + (d.healthy ? "healthy" : d.condition) + ", " + percent(d.confidence) + " sure";
  }

  function finish(items, answers, noteTable) {
    var words = [];
    items.forEach(function (item, i) {
      var result = answers[i] || { status: 500, message: "No answer for this photo." };
      item.done = true;
      if (result.status !== 200) {
        showProblem(item, problemFor(result.status, result.message));
      } else {
        var v = result.diagnosis.in_domain || {};
        if (v.available && v.known === false) showUnknown(item, result.diagnosis);
        else showDiagnosis(item, result.diagnosis, noteTable[result.diagnosis.label]);
      }
      words.push(summary(item, result));
    });
    finished = true;
    status.textContent = items.length + (items.length === 1 ? " photo" : " photos") + " checked: " + words.join("; ") + ".";
  }

  function failAll(items, problem) {
    items.forEach(function (item) {
      showProblem(item, problem);
    });
    showError(problem.title, problem.detail);
    status.textContent = problem.title;
  }

  function send(event) {
    event.preventDefault();
    if (sending) return;
    clearError();
    var items = sendable();
    if (!chosen.length || finished) {
      showError(finished ? "No new photo was chosen." : "No photo was chosen.", "Choose one or more leaf photos first.");
      return;
    }
    if (!items.length) {
      showError("Nothing to send.", "None of the chosen files is a photo the service can take; choose others.");
      return;
    }
    var total = items.reduce(function (sum, item) {
      return sum + item.file.size;
    }, 0);
    if (total > limits.requestBytes) {
      showError(
        "The photos are too large together.",
        "They add up to " + megabytes(total) + "; send at most " + megabytes(limits.requestBytes) + " at a time."
      );
      return;
    }
    var body = new FormData();
    items.forEach(function (item) {
      body.append("images", item.file, item.file.name);
      showPending(item, "Diagnosing\u2026");
    });
    body.append("top_k", String(limits.topK));
    setSending(true);
    status.textContent = "Diagnosing " + items.length + (items.length === 1 ? " photo\u2026" : " photos\u2026");
    var answer = fetch(data.api, { method: "POST", body: body, headers: { Accept: "application/json" } });
    Promise.all([answer, conditionNotes()])
      .then(function (both) {
        var response = both[0];
        return response
          .json()
          .catch(function () {
            return {};
          })
          .then(function (json) {
            if (response.ok) {
              finish(items, json.results || [], both[1]);
            } else if (response.status === 503) {
              failAll(items, { title: "The service is busy.", detail: "Try again in a moment." });
            } else if (response.status === 413) {
              failAll(items, {
                title: "The photos are too large together.",
                detail: json.message || "Send fewer or smaller photos.",
              });
            } else if (response.status === 400) {
              failAll(items, { title: "The photos could not be sent.", detail: json.message || "Choose them again." });
            } else {
              failAll(items, {
                title: "Something went wrong (status " + response.status + ").",
                detail: "Try again; if it keeps happening, tell whoever runs this service.",
              });
            }
          });
      })
      .catch(function () {
        failAll(items, {
          title: "Could not reach the service.",
          detail: "Check the connection and try again.",
        });
      })
      .then(function () {
        setSending(false);
      });
  }

  // --- events ----------------------------------------------------------------------------------

  pickers.forEach(function (input) {
    if (!input) return;
    input.addEventListener("change", function () {
      addFiles(Array.prototype.slice.call(input.files));
      input.value = ""; // the same photo can be chosen again
    });
  });

  ["dragenter", "dragover"].forEach(function (name) {
    document.addEventListener(name, function (event) {
      event.preventDefault(); // a photo dropped anywhere is added, not opened by the browser
      dropzone.classList.add("dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    document.addEventListener(name, function (event) {
      event.preventDefault();
      if (name === "drop" || event.target === dropzone || !event.relatedTarget) dropzone.classList.remove("dragover");
    });
  });
  document.addEventListener("drop", function (event) {
    addFiles(event.dataTransfer && event.dataTransfer.files);
  });
  document.addEventListener("paste", function (event) {
    var files = event.clipboardData && event.clipboardData.files;
    if (files && files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });

  clearButton.addEventListener("click", function () {
    reset();
    pickers[0].focus();
  });
  form.addEventListener("submit", send);
})();

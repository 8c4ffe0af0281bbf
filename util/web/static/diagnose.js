// The page with JavaScript: choose, drop or paste photos, see previews, send them together to
// POST /Diagnosis/predictions (or, with "These photos show one plant", to POST /Diagnosis/plant),
// then post the answer to /diagnose/cards and put the cards the server draws in place: one set of
// macros (templates/_results.html) draws every card, with JavaScript or without. "Which plant is
// this?" goes along as the crop hint. Every sentence this script says comes from the page
// (data-words, util/messages.py PAGE_SCRIPT); it has no words of its own.
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
    plantPhotos: Number(data.maxPlantPhotos),
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
  var cropChoice = document.getElementById("crop");
  var onePlant = document.getElementById("one-plant");
  var IMAGE_NAME = /\.(jpe?g|png|webp|bmp|tiff?|gif|heic|heif|avif)$/i;

  var chosen = []; // {file, number, problem, url, card}
  var finished = false; // the cards shown are answers: photos chosen next start a new list
  var sending = false;
  var words = JSON.parse(data.words);

  clearButton.hidden = false;

  // --- words ---------------------------------------------------------------------------------

  function megabytes(size) {
    var mb = size / (1024 * 1024);
    return (mb < 10 ? mb.toFixed(1) : mb.toFixed(0)) + " MB";
  }

  // words[key] with each {name} filled in from values
  function say(key, values) {
    return words[key].replace(/\{(\w+)\}/g, function (whole, name) {
      return values && name in values ? String(values[name]) : whole;
    });
  }

  function check(file) {
    var looksLikeImage = file.type ? file.type.indexOf("image/") === 0 : IMAGE_NAME.test(file.name);
    if (!looksLikeImage) {
      return { title: say("notAPhoto"), detail: say("choosePhoto", { formats: data.formats }) };
    }
    if (file.size === 0) {
      return { title: say("empty"), detail: say("chooseAgain") };
    }
    if (file.size > limits.photoBytes) {
      return {
        title: say("tooLarge"),
        detail: say("tooLargeDetail", { size: megabytes(file.size), limit: megabytes(limits.photoBytes) }),
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
    card.append(el("p", { class: "pending", text: say("readyToSend") }));
    return card;
  }

  function showPending(item, words) {
    cardFrame(item, "pending").append(el("p", { class: "pending", text: words }));
  }

  function showProblem(item, problem) {
    cardFrame(item, "problem").append(
      el("p", { class: "verdict verdict-problem" }, el("span", { class: "icon", "aria-hidden": "true", text: "!" }), " " + problem.title),
      el("p", { class: "detail", text: problem.detail })
    );
  }

  // --- "Was this right?" (only when the service keeps diagnoses: the cards then carry its forms) ---

  function askLater(root) {
    root.querySelectorAll(".feedback-which").forEach(function (which) {
      which.hidden = true; // asked after "No"
    });
  }

  function said(block, text) {
    block.querySelector(".feedback-said").textContent = text;
  }

  function sendFeedback(event) {
    var formNode = event.target;
    var block = formNode.closest(".feedback");
    if (!block) return;
    event.preventDefault();
    var id = formNode.querySelector("input[name=id]").value;
    if (formNode.classList.contains("forget-form")) {
      fetch(data.keptApi + encodeURIComponent(id), { method: "DELETE", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status !== 204) throw new Error();
          block.replaceChildren(el("p", { class: "feedback-said", text: say("deleted") }));
        })
        .catch(function () {
          said(block, say("notDeleted"));
        });
      return;
    }
    var correct = event.submitter ? event.submitter.value === "true" : true;
    var which = formNode.querySelector(".feedback-which");
    if (!correct && which.hidden) {
      which.hidden = false; // "No": now ask which condition it is, and send with the next "No"
      event.submitter.textContent = say("send");
      formNode.querySelector("select").focus();
      return;
    }
    var body = { id: id, correct: correct };
    if (!correct) body.label = formNode.querySelector("select").value;
    fetch(data.feedbackApi, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { Accept: "application/json", "Content-Type": "application/json" },
    })
      .then(function (response) {
        return response.json().then(function (json) {
          if (!response.ok) throw new Error(json.message || say("notSaved"));
        });
      })
      .then(function () {
        formNode.replaceChildren(el("p", { class: "feedback-thanks", text: say("thanks") }));
      })
      .catch(function (error) {
        said(block, error.message || say("notSaved"));
      });
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

  function removePlantPhotos() {
    ["plant-photos", "plant-photos-title"].forEach(function (id) {
      var node = document.getElementById(id);
      if (node) node.remove();
    });
  }

  function reset() {
    chosen.forEach(function (item) {
      if (item.url) URL.revokeObjectURL(item.url);
    });
    chosen = [];
    finished = false;
    results.replaceChildren();
    removePlantPhotos();
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
      showError(say("tooMany"), say("tooManyDetail", { limit: limits.photos, left: left }));
    }
    section.hidden = false;
    var ready = sendable().length;
    status.textContent = ready ? say("ready", { count: photoCount(ready) }) : say("noneReady");
  }

  function photoCount(count) {
    return count + (count === 1 ? " photo" : " photos");
  }

  function sendable() {
    return chosen.filter(function (item) {
      return !item.problem && !item.done;
    });
  }

  function setSending(value) {
    sending = value;
    submitButton.disabled = value;
    clearButton.disabled = value;
    results.setAttribute("aria-busy", value ? "true" : "false");
  }

  // Put the server's cards in place of the pending ones (each keeps its preview); one plant: its card first,
  // then each photo's, then the list of what became of each photo.
  function drawCards(items, answer, mode) {
    var request = {
      mode: mode,
      numbers: items.map(function (item) {
        return item.number;
      }),
      filenames: items.map(function (item) {
        return item.file.name;
      }),
      answer: answer,
    };
    return fetch(data.cards, {
      method: "POST",
      body: JSON.stringify(request),
      headers: { Accept: "text/html", "Content-Type": "application/json" },
    })
      .then(function (response) {
        if (!response.ok) throw new Error("cards: " + response.status);
        return response.text();
      })
      .then(function (html) {
        var drawn = document.createElement("template");
        drawn.innerHTML = html;
        var list = drawn.content.querySelector(".cards");
        var cards = Array.prototype.slice.call(list.children);
        askLater(list);
        if (mode === "plant") results.prepend(cards.shift());
        items.forEach(function (item, i) {
          var card = cards[i];
          var preview = item.card.querySelector(".preview");
          if (preview) card.querySelector(".card-title").after(preview);
          item.card.replaceWith(card);
          item.card = card;
          item.done = true;
        });
        var photos = drawn.content.querySelector("#plant-photos");
        removePlantPhotos();
        if (photos) results.after(el("h3", { id: "plant-photos-title", text: say("eachPhoto") }), photos);
        finished = true;
        status.textContent = list.dataset.status;
      });
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
      showError(finished ? say("noNewPhoto") : say("noPhoto"), say("choosePhotos"));
      return;
    }
    if (!items.length) {
      showError(say("nothingToSend"), say("nothingToSendDetail"));
      return;
    }
    var asPlant = onePlant && onePlant.checked;
    if (asPlant && items.length > limits.plantPhotos) {
      showError(say("tooManyPlant"), say("tooManyPlantDetail", { count: items.length, limit: limits.plantPhotos }));
      return;
    }
    var total = items.reduce(function (sum, item) {
      return sum + item.file.size;
    }, 0);
    if (total > limits.requestBytes) {
      showError(say("tooLargeTogether"), say("tooLargeTogetherDetail", { size: megabytes(total), limit: megabytes(limits.requestBytes) }));
      return;
    }
    var body = new FormData();
    items.forEach(function (item) {
      body.append("images", item.file, item.file.name);
      showPending(item, say("diagnosing"));
    });
    body.append("top_k", String(limits.topK));
    if (cropChoice && cropChoice.value) body.append("crop", cropChoice.value);
    setSending(true);
    status.textContent = say("diagnosingCount", { count: photoCount(items.length) });
    fetch(asPlant ? data.plantApi : data.api, { method: "POST", body: body, headers: { Accept: "application/json" } })
      .then(function (response) {
        return response
          .json()
          .catch(function () {
            return {};
          })
          .then(function (json) {
            if (response.ok) return drawCards(items, json, asPlant ? "plant" : "photos");
            if (response.status === 503) {
              failAll(items, { title: say("busy"), detail: say("busyDetail") });
            } else if (response.status === 413) {
              failAll(items, { title: say("tooLargeTogether"), detail: json.message || say("sendFewer") });
            } else if (response.status === 422 || response.status === 415) {
              failAll(items, { title: say("noPlantDiagnosis"), detail: json.message || say("chooseOther") });
            } else if (response.status === 400) {
              failAll(items, { title: say("notSent"), detail: json.message || say("chooseThemAgain") });
            } else {
              failAll(items, { title: say("wentWrong", { status: response.status }), detail: say("wentWrongDetail") });
            }
          });
      })
      .catch(function () {
        failAll(items, { title: say("unreachable"), detail: say("unreachableDetail") });
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
  results.addEventListener("submit", sendFeedback);
})();

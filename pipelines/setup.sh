#!/usr/bin/env bash
# Set-up for a fresh Debian machine: TTS engines from apt (when missing) and .venv from pip.
# Idempotent: re-running does nothing when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v flite >/dev/null || need+=(flite)
command -v text2wave >/dev/null || need+=(festival)
[ -d /usr/share/festival/voices/english/kal_diphone ] || need+=(festvox-kallpc16k)
[ -d /usr/share/festival/voices/english/ked_diphone ] || need+=(festvox-kdlpc16k)
command -v sox >/dev/null || need+=(sox)
# Headless Chromium and its WebDriver: the browser test of `recog serve` (tests/test_serve.py).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
[ -f /usr/share/games/fortunes/fortunes ] || need+=(fortunes fortunes-min)
ldconfig -p | grep -q libsndfile || need+=(libsndfile1)
# Outline fonts for the synthetic handwriting corpus (femkeklaver and rufscript are its held-out families).
for font in fonts-femkeklaver fonts-rufscript fonts-comic-neue fonts-bwht fonts-humor-sans fonts-kaushanscript \
  fonts-levien-typoscript fonts-tomsontalks fonts-cabinsketch fonts-dejavu-core; do
  dpkg -s "$font" >/dev/null 2>&1 || need+=("$font")
done
# More letter forms (script and handwriting faces, ink traced from their skeletons) where Debian has
# them: optional, one that is unavailable is skipped. Only Nanum Pen/Brush Script, TeX Gyre Chorus and
# Z003 are used from the big packages (pipelines/outline_fonts.py). Reserved fonts are never listed here.
wanted=()
for font in fonts-lobster fonts-nanum-extra fonts-texgyre fonts-urw-base35 fonts-seto fonts-klee \
  fonts-yanone-kaffeesatz fonts-havana fonts-leckerli-one fonts-yusei-magic fonts-kiloji; do
  dpkg -s "$font" >/dev/null 2>&1 || wanted+=("$font")
done
# Optional voices for the speech corpus: MBROLA diphone voices (Debian non-free; us1 and en1 are reserved
# and never installed), more festival diphone voices (contrib/main), and the HMM voices of RHVoice and
# SVOX Pico (non-free; RHVoice's slt is reserved: the corpus never uses it). The corpus uses what is installed.
voices=()
for voice in mbrola mbrola-us2 mbrola-us3 mbrola-af1 mbrola-nl2 mbrola-fr1 mbrola-fr4 mbrola-de1 mbrola-de2 \
  mbrola-de3 mbrola-de4 mbrola-de5 mbrola-de6 mbrola-gr2 mbrola-hu1 mbrola-pl1 mbrola-ro1 mbrola-sw1 mbrola-sw2 \
  festvox-us2 festvox-us3 festvox-rablpc16k rhvoice rhvoice-english libttspico-utils; do
  dpkg -s "$voice" >/dev/null 2>&1 || voices+=("$voice")
done
if [ ${#need[@]} -gt 0 ] || [ ${#wanted[@]} -gt 0 ] || [ ${#voices[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    if [ ${#voices[@]} -gt 0 ]; then
      echo "setup: optional TTS voices not installed (Debian contrib/non-free): ${voices[*]}" >&2
    fi
    if [ ${#wanted[@]} -gt 0 ]; then
      echo "setup: optional font packages not installed: ${wanted[*]} (sudo apt-get install ${wanted[*]})" >&2
    fi
    if [ ${#need[@]} -gt 0 ]; then
      echo "setup: missing Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
      exit 1
    fi
  else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if [ ${#need[@]} -gt 0 ]; then
      echo "setup: installing Debian packages: ${need[*]}"
      apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    for font in "${wanted[@]}"; do
      apt-get install -y -qq "$font" >/dev/null 2>&1 || echo "setup: $font unavailable, skipped" >&2
    done
    if [ ${#voices[@]} -gt 0 ]; then
      if ! grep -Eqs '(^|[[:space:]])non-free([[:space:]]|$)' /etc/apt/sources.list /etc/apt/sources.list.d/* &&
        [ -r /etc/os-release ]; then
        # MBROLA's voices are in Debian's contrib and non-free sections: enable them for this release.
        . /etc/os-release
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          "${VERSION_CODENAME:-bookworm}" >/etc/apt/sources.list.d/recog-voices.sources
        apt-get update -qq || true
      fi
      echo "setup: installing optional TTS voices: ${voices[*]}"
      apt-get install -y -qq "${voices[@]}" >/dev/null 2>&1 ||
        for voice in "${voices[@]}"; do
          apt-get install -y -qq "$voice" >/dev/null 2>&1 || echo "setup: $voice unavailable, skipped" >&2
        done
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q --no-deps -e .

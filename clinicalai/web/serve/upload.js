// Upload one file chosen in the page to the ClinicalAI server (POST /api/upload, streamed).
// The server checks the name, the first bytes and the size limit; its message (or the
// network error) goes to the page's error line. On success the server opens the volume.
window.clinicalaiUpload = async function clinicalaiUpload(input) {
  const file = input.files && input.files[0];
  if (!file) {
    return;
  }
  const state = window.trame.state;
  state.set("ca_error", "");
  state.set("ca_data_uploading", true);
  try {
    const response = await window.fetch(
      "api/upload?name=" + encodeURIComponent(file.name),
      { method: "POST", body: file, credentials: "same-origin" },
    );
    const reply = await response.json();
    if (reply.error) {
      state.set("ca_error", reply.error);
    }
  } catch (error) {
    state.set("ca_error", "upload failed: " + error);
  } finally {
    state.set("ca_data_uploading", false);
    input.value = "";
  }
};

// Every click reaches the server after the changes the user made before it.
//
// trame's client sends a state change (a slider, a text field, a choice) only while no other
// call to the server is pending, and sends a trigger (a button) at once. Under load a button
// could therefore overtake the slider move or the typed value before it: "go to lesion VOI"
// after a slider drag left the server on the dragged slice while the page's slider showed the
// VOI (seen in browser tests on loaded cores), and Run could start with the value the field had
// before the user's last edit. trame has no option for this order, so each trigger first sends
// the state changes still waiting (trame's own flush, told the client is idle for that one
// check) and waits for the server to take them.
(function orderTriggers() {
  const trame = window.trame;
  if (!trame || !trame.state || !trame.client || !trame.trigger) {
    window.setTimeout(orderTriggers, 20);
    return;
  }
  if (trame.clinicalaiOrderedTriggers) {
    return;
  }
  trame.clinicalaiOrderedTriggers = true;
  const send = trame.trigger.bind(trame);

  function flushNow() {
    // the client object is frozen: the state is shown, for one synchronous check, a client
    // that inherits everything from it but says it is idle
    const state = trame.state;
    const client = state.client;
    state.client = Object.create(client, { isBusy: { value: () => false } });
    try {
      return state.flush();
    } finally {
      state.client = client;
    }
  }

  trame.trigger = async function orderedTrigger(...args) {
    if (trame.state.dirtyKeys && trame.state.dirtyKeys.size && trame.client.isConnected()) {
      await flushNow();
    }
    return send(...args);
  };
})();

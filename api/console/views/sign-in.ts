// The sign-in page (docs/operations.md#the-console): one field, the API key.
import { html, type SafeHtml } from '../html.ts';
import { layout, type View } from './layout.ts';

export function signInPage(view: View, next: string, error?: string): SafeHtml {
  const { t } = view;
  const content = html`<section class="sign-in">
<h1>${t.signInTitle}</h1>
<form method="post" action="/console/sign-in" class="stacked-form">
  <input type="hidden" name="next" value="${next}">
  <div class="field"><label for="api-key">${t.apiKey}</label>
  <input id="api-key" name="apiKey" type="password" autocomplete="current-password" required maxlength="1024" autofocus></div>
  <div class="buttons"><button type="submit" class="primary">${t.signIn}</button></div>
</form>
</section>`;
  return layout(view, t.signIn, content, { error, nav: false });
}

export function errorPage(view: View, status: number, message: string): SafeHtml {
  return layout(view, String(status), html`<h1>${status}</h1><p class="error" role="alert">${message}</p><p><a href="/console">${view.t.firmwareList}</a></p>`);
}
